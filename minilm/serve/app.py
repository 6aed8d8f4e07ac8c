"""The HTTP API's routes, on FastAPI. The service they call (checks, tokenizing, the queue) is
`service.py`'s, the batching `batcher.py`'s, the middleware in front (admission, body limits)
`guard.py`'s, the error shapes `errors.py`'s, the request and response types `schemas.py`'s.

Routes (docs/serve.md has the request and response fields):
    POST /v1/embeddings   OpenAI-compatible embeddings (input, model, encoding_format, dimensions, user)
    GET  /v1/models       the one model served, as OpenAI lists models
    POST /embed           TEI-compatible (inputs, normalize, truncate, prompt_name)
    POST /predict         question type, sentiment and entities (heads/), optionally the embedding too
    POST /tokenize        the tokens the encoder sees, prompt included: ids, texts and character offsets
    POST /search          the --index shard folder's rows nearest a query, with ids and texts (minilm.search)
    POST /rerank          TEI-compatible: texts ranked against a query by the --reranker cross-encoder
    GET  /health          200 once warmed up, 503 before and while shutting down
    GET  /metrics         Prometheus text format (metrics.py)
    GET  /docs            OpenAPI docs (FastAPI)

The hot route, POST /v1/embeddings, is defined once, for FastAPI (its OpenAPI entry, and the errors of
a malformed body); `Guard` hands a well-formed body (`schemas.well_formed`) straight to the same answer,
without FastAPI's routing, dependencies and exception layers. Those cost the event loop about as much
CPU as the rest of a single-sentence request, on the cores the model needs (docs/serve.md, "Load benchmark").

Errors are JSON in the caller's dialect: OpenAI's {"error": {"message", "type", "param", "code"}}
under /v1/, TEI's {"error", "error_type"} elsewhere. 422: a malformed body (one line says what is
wrong), 413: a body, a request or a /predict text over the limits, 408: a body that did not arrive
within --body-timeout, 404: a model this server does not serve, 429 with Retry-After: the queue is
full, 503: warming up or shutting down (and a request still running when the drain time is over).

Every route costs bounded memory and time (docs/serve.md, "Limits"). A request to a route that works
(QUEUED_ROUTES) takes its place in the queue from its headers on, before its body is read, until its
answer is out or its client is gone (`Guard`), so memory holds at most --max-queue bodies and answers;
the body is read within --body-timeout and --max-body-mb; an embedded or tokenized text is read only
as far as its first max_seq_length tokens need (bounded.py); a /predict text is at most
ServeSettings.max_predict_pieces word pieces and max_predict_chars characters, and the worker runs
/predict in chunks of that size, serving embeddings and dropping abandoned requests in between
(batcher.py).

Long texts: `SentenceEncoder.encode` (and sentence-transformers) embed the first max_seq_length
tokens. /v1/embeddings does so by default and says so: each data item carries "truncated", and the
X-Truncated-Inputs header lists the indices. /embed follows TEI: truncate defaults to false, and a
text over the limit is a 422 naming it; with truncate=true the header lists what was cut. Both count
the prompt's tokens, and so does /tokenize.
"""

from __future__ import annotations

import base64
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from ..encoders.sentence_encoder import normalized
from .errors import ApiError, error_response
from .guard import Guard
from .schemas import (
    EmbedRequest,
    Health,
    OpenAIEmbeddingRequest,
    OpenAIEmbeddingResponse,
    OpenAIError,
    OpenAIModelList,
    Prediction,
    PredictRequest,
    Rank,
    RerankRequest,
    SearchHit,
    SearchRequest,
    TEIError,
    Token,
    TokenizeRequest,
    as_list,
    documented,
    validation_message,
    well_formed,
)
from .service import Service


def json_response(content: Any, headers: dict[str, str] | None = None) -> Response:
    """orjson: numpy vectors straight to JSON, as the shortest text that reads back as the same float32
    (15x faster than json.dumps of .tolist(), which was the server's biggest cost per request)."""
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json", headers=headers
    )


def truncation_header(truncated: list[int]) -> dict[str, str]:
    return {"X-Truncated-Inputs": ",".join(map(str, truncated))} if truncated else {}


# ---------------------------------------------------------------------------- the app


def create_app(service: Service) -> FastAPI:
    settings, encoder = service.settings, service.encoder

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        service.start()
        try:
            await run_in_threadpool(service.warm_up)
        except Exception as error:  # a model that cannot embed the warm-up texts (NaN output, say) never serves:
            service.startup_error = error  # the entry point stops and says why in one line (uvicorn would print
            await run_in_threadpool(service.stop)  # a raised error's traceback, and exit 0)
            yield
            return
        service.ready = True
        yield
        await run_in_threadpool(service.stop)  # every admitted request is answered first

    app = FastAPI(
        title="minilm",
        summary=f"Embeddings and multi-task predictions from {settings.model_name}",
        version="0.1.0",
        lifespan=lifespan,
    )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(request.url.path, error, service.metrics)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        param = None if first.get("type") == "json_invalid" else next((str(p) for p in first.get("loc", ())[1:2]), None)
        return error_response(request.url.path, ApiError(422, validation_message(error), param=param), service.metrics)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        """FastAPI's own errors, in our shapes: no such route, wrong method, a body it could not parse."""
        path, method = request.url.path, request.method
        if error.status_code == 404:
            answer = ApiError(404, f"there is no route {path}; see /docs for the routes")
        elif error.status_code == 405:
            allowed = error.headers.get("Allow", "") if error.headers else ""
            answer = ApiError(405, f"{method} is not allowed on {path}; use {allowed or 'another method'}")
        elif error.status_code == 400:  # nesting too deep for the JSON parser, or bytes that are not UTF-8
            answer = ApiError(422, "the body could not be read as JSON: send UTF-8 JSON of reasonable nesting")
        else:
            answer = ApiError(error.status_code, str(error.detail))
        return error_response(path, answer, service.metrics)

    async def openai_answer(body: OpenAIEmbeddingRequest, receive: Receive) -> Response:
        if not service.served(body.model):
            raise ApiError(
                404,
                f"the model {body.model!r} is not served here; this server serves {settings.model_name!r}",
                param="model",
                code="model_not_found",
            )
        if body.dimensions is not None and not 1 <= body.dimensions <= encoder.dim:
            raise ApiError(422, f"dimensions must be between 1 and {encoder.dim}", param="dimensions")
        embedded = await service.embed(receive, as_list(body.input), body.truncate, "/v1/embeddings")
        vectors = embedded.vectors[:, : body.dimensions] if body.dimensions else embedded.vectors
        if encoder.config.normalize:
            vectors = normalized(vectors)
        data = []
        for i, vector in enumerate(vectors):
            if body.encoding_format == "base64":
                value: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            else:
                value = vector
            data.append({"object": "embedding", "index": i, "embedding": value, "truncated": i in embedded.truncated})
        tokens = sum(embedded.tokens)
        content = {
            "object": "list",
            "data": data,
            "model": settings.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return json_response(content, truncation_header(embedded.truncated))

    @app.post(
        "/v1/embeddings",
        summary="OpenAI-compatible embeddings",
        responses=documented(OpenAIEmbeddingResponse, OpenAIError, 408, 413, 422, 429, 503),
    )
    async def openai_embeddings(request: Request, body: OpenAIEmbeddingRequest) -> Response:
        # (no docstring: FastAPI would put it in /openapi.json) /openapi.json's entry, and the answer to the
        # bodies openai_embeddings_direct leaves: their errors
        return await openai_answer(body, request.receive)

    async def openai_embeddings_direct(scope: Scope, body: bytes, receive: Receive, send: Send) -> bool:
        """The route's answer without FastAPI, for a well-formed body (Guard calls it); False for any other
        body, which FastAPI's route then reads and answers with its error."""
        request = well_formed(OpenAIEmbeddingRequest, scope["headers"], body)
        if request is None:
            return False
        try:
            response = await openai_answer(request, receive)
        except ApiError as error:  # as the exception handler above answers it
            response = error_response(scope["path"], error, service.metrics)
        await response(scope, receive, send)
        return True

    @app.get(
        "/v1/models",
        summary="The model served, as OpenAI lists models",
        responses=documented(OpenAIModelList, OpenAIError),
    )
    async def openai_models() -> dict:
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "owned_by": "minilm"}]}

    @app.post(
        "/embed",
        summary="TEI-compatible embeddings: a list of vectors",
        responses=documented(list[list[float]], TEIError, 408, 413, 422, 429, 503),
    )
    async def tei_embed(request: Request, body: EmbedRequest) -> Response:
        embedded = await service.embed(request.receive, as_list(body.inputs), body.truncate, "/embed", body.prompt_name)
        vectors = normalized(embedded.vectors) if body.normalize else embedded.vectors
        return json_response(vectors, truncation_header(embedded.truncated))

    @app.post(
        "/predict",
        summary="Question type, sentiment and entities (character offsets), one encoder pass",
        responses=documented(list[Prediction], TEIError, 408, 413, 422, 429, 503),
    )
    async def predict(request: Request, body: PredictRequest) -> Response:
        return json_response(await service.predict(request.receive, as_list(body.inputs), body.with_embedding))

    @app.post(
        "/tokenize",
        summary="The tokens the encoder sees, prompt included (truncated to max_seq_length), with offsets",
        responses=documented(list[list[Token]], TEIError, 408, 413, 422, 429, 503),
    )
    async def tokenize(body: TokenizeRequest) -> Response:
        content, over = await service.tokenize(as_list(body.inputs), body.prompt_name, body.add_special_tokens)
        return Response(content, media_type="application/json", headers=truncation_header(over))

    @app.post(
        "/search",
        summary="The --index folder's k rows nearest the query (minilm.search), with their ids and texts",
        responses=documented(list[SearchHit], TEIError, 404, 408, 413, 422, 429, 503),
    )
    async def search(request: Request, body: SearchRequest) -> Response:
        return json_response(await service.search(request.receive, body.query, body.k))

    @app.post(
        "/rerank",
        summary="TEI-compatible: the texts ranked against the query by the --reranker cross-encoder, best first",
        responses=documented(list[Rank], TEIError, 404, 408, 413, 422, 429, 503),
    )
    async def rerank(request: Request, body: RerankRequest) -> Response:
        scores = await service.rerank(request.receive, body.query, body.texts, body.raw_scores)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])  # ties keep the request's order
        ranks = [
            {"index": i, "score": scores[i], **({"text": body.texts[i]} if body.return_text else {})} for i in order
        ]
        return json_response(ranks)

    @app.api_route(
        "/health",
        methods=["GET", "HEAD"],
        summary="200 once warmed up; 503 before and while stopping",
        responses=documented(Health, TEIError, 503),
    )
    async def health() -> Response:
        if not service.ready:
            return error_response("/health", ApiError(503, "warming up or shutting down"), service.metrics)
        return json_response({"status": "ok", "model": settings.model_name, "dtype": encoder.dtype})

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(service.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    routes = {route.path for route in app.routes}
    app.add_middleware(Guard, service=service, routes=routes, direct={"/v1/embeddings": openai_embeddings_direct})
    return app
