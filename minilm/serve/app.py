"""The HTTP API: routes, request checks and the service behind them, on FastAPI. The batching is `batcher.py`'s,
the middleware in front (admission, body limits) `guard.py`'s, the error shapes `errors.py`'s, the
request bodies `requests.py`'s, the tokens kept and written `tokens.py`'s.

Routes (docs/serve.md has the request and response fields):
    POST /v1/embeddings   OpenAI-compatible embeddings (input, model, encoding_format, dimensions, user)
    GET  /v1/models       the one model served, as OpenAI lists models
    POST /embed           TEI-compatible (inputs, normalize, truncate, prompt_name)
    POST /predict         question type, sentiment and entities (heads/), optionally the embedding too
    POST /tokenize        the tokens the encoder sees, prompt included: ids, texts and character offsets
    GET  /health          200 once warmed up, 503 before and while shutting down
    GET  /metrics         Prometheus text format (metrics.py)
    GET  /docs            OpenAPI docs (FastAPI)

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

import asyncio
import base64
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..sentence_encoder import NonFiniteOutput, SentenceEncoder, check_texts, normalized
from ..text.tokenization import SentenceTokenizer
from .batcher import Batcher, Closed, Job, QueueFull
from .bounded import bounded_reader
from .errors import ApiError, error_response
from .guard import Guard
from .metrics import Metrics
from .requests import (
    EmbedRequest,
    OpenAIEmbeddingRequest,
    PredictRequest,
    TokenizeRequest,
    as_list,
    validation_message,
)
from .tokens import token_ids, tokens_json

WARM_UP_TEXTS = ["The server warms up on this sentence.", "word " * 300]  # the second one fills max_seq_length


@dataclass
class ServeSettings:
    model_name: str  # what /v1/models lists and responses name
    model_aliases: frozenset[str] = frozenset()  # other names a request's "model" may use (lower case)
    max_batch_tokens: int = 8192  # padded tokens per encoder batch
    max_queue: int = 512  # requests admitted at once (from their headers until their answer is out); more get 429
    max_request_inputs: int = 2048  # texts per request (OpenAI's own limit); more get 413
    max_body_bytes: int = 16 * 2**20  # request body; more gets 413
    body_timeout_s: float = 60.0  # the whole body must arrive within this after the headers; else 408
    header_timeout_s: float = 10.0  # a connection's next headers must arrive within this (__main__.py applies it)
    # /predict reads a text whole, in windows of max_seq_length tokens overlapping by half: 2,048 word
    # pieces are 16 windows, about 1 s of the worker on 2 cores; more, or more characters than 64 per
    # piece allowed (giant words cost the tokenizer time, not windows), gets 413. The worker's chunks
    # hold at most this much too, so one chunk is what a short request may wait behind.
    max_predict_pieces: int = 2048
    max_predict_chars: int = 64 * 2048
    stop_grace_s: float = 1.0  # after the drain: then what is still queued is failed (the current batch ends)
    retry_after_s: int = 1
    threads: int | None = None  # torch threads of the inference worker (batcher.py says why it is set there)
    # put before every text to embed, unless a request names another (--prompt-name/--prompt);
    # None: the checkpoint's default prompt, if it has one, as SentenceEncoder.encode
    prompt: str | None = None


async def disconnected(request: Request) -> None:
    """Returns when the client has gone away (the body was read already, so receive() waits for that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# ---------------------------------------------------------------------------- the service


@dataclass
class Embedded:
    vectors: np.ndarray  # (N, C) float32, not normalized
    tokens: list[int]  # tokens each text was embedded with ([CLS]/[SEP] included, after truncation)
    truncated: list[int]  # indices of the texts that were cut to max_seq_length


@dataclass
class Service:
    """What the routes call: checks, tokenizing off the event loop, and the batcher."""

    encoder: SentenceEncoder
    settings: ServeSettings
    predict_texts: Callable[[list[str], bool], list[dict]] | None = None  # heads, when loaded
    predict_tokenizer: SentenceTokenizer | None = None  # the heads' own (default: the encoder's), for the caps
    metrics: Metrics = field(default_factory=Metrics)
    batcher: Batcher | None = None
    ready: bool = False
    startup_error: Exception | None = None  # the warm-up failed: the server stops without serving
    admitted: int = 0  # requests holding a place in the queue (Guard: from their headers until their answer is out)

    def start(self) -> None:
        self.batcher = Batcher(
            self.encoder,
            self.predict_texts,
            max_batch_tokens=self.settings.max_batch_tokens,
            max_queue=self.settings.max_queue,
            on_batch=self.metrics.record_batch,
            threads=self.settings.threads,
            predict_pieces=self.settings.max_predict_pieces + self.encoder.tokenizer.num_special,
            predict_chars=self.settings.max_predict_chars,
        )
        self.metrics.track_queue(lambda: self.admitted)

    def warm_up(self) -> None:
        """One embedding batch (a short and a full-length text) and one prediction, before /health says ok;
        and the long-text reader's table (bounded.py), so that the first long text does not wait for it."""
        assert self.batcher is not None
        bounded_reader(self.encoder.tokenizer)
        if self.predict_tokenizer is not None:
            bounded_reader(self.predict_tokenizer)
        encodings, _ = self.encoder.tokenizer.encode(WARM_UP_TEXTS)
        self.batcher.submit(Job("embed", encodings=encodings)).result()
        if self.predict_texts is not None:
            self.batcher.submit(Job("predict", texts=WARM_UP_TEXTS[:1])).result()

    def stop(self) -> None:
        """After the drain: every request still in flight was answered or cancelled (and its job abandoned),
        so the worker has at most its current batch left. After stop_grace_s, whatever is still queued is
        failed, and the worker stops once that batch (or predict chunk) is done."""
        self.ready = False
        if self.batcher is not None:
            self.batcher.close(timeout=self.settings.stop_grace_s)

    def check_request(self, texts: list[str]) -> list[str]:
        if len(texts) > self.settings.max_request_inputs:
            raise ApiError(
                413,
                f"the request has {len(texts)} inputs; the limit is {self.settings.max_request_inputs} per request"
                " (--max-request-inputs): send them in several requests",
            )
        try:
            return check_texts(texts)
        except ValueError as error:  # a lone surrogate ("\ud800" in the JSON)
            raise ApiError(422, str(error).replace("texts[", "input["), param="input") from None

    def admit(self) -> None:
        """A place in the queue, taken before the body is read (`Guard`): 429 when max_queue requests hold
        one, 503 while warming up or stopping. The caller gives it back with `release`. (The batcher keeps
        its own count of the jobs it holds; the server's requests stay within it, since each holds a place
        here for longer than its job.)"""
        if self.batcher is None or not self.ready:
            raise ApiError(503, "the server is not ready (warming up or shutting down); retry shortly")
        if self.admitted >= self.settings.max_queue:
            raise self.busy(f"{self.admitted} requests are queued (--max-queue {self.settings.max_queue})")
        self.admitted += 1

    def release(self) -> None:
        self.admitted -= 1

    def busy(self, why: str) -> ApiError:
        after = self.settings.retry_after_s
        return ApiError(429, f"the server is busy: {why}; retry after {after} s", headers={"Retry-After": str(after)})

    async def run(self, job: Job, request: Request) -> Any:
        """Queue the job and wait for it; if the client goes away first (or the server cancels this
        request at the end of its drain time), the job is abandoned and the worker drops it. A job the
        stopping worker never ran (Closed) is the 503 of a server shutting down."""
        assert self.batcher is not None
        try:
            answer = asyncio.wrap_future(self.batcher.submit(job))
        except QueueFull as error:  # abandoned jobs the worker has not dropped yet still count there
            raise self.busy(str(error)) from None
        except Closed:
            raise ApiError(503, "the server is shutting down") from None
        watch = asyncio.ensure_future(disconnected(request))
        watch.add_done_callback(lambda w: w.cancelled() or (job.abandon(), answer.cancel()))
        try:
            return await answer
        except Closed:
            raise ApiError(503, "the server is shutting down and stopped this request; retry it") from None
        except NonFiniteOutput as error:  # never a NaN vector (orjson would write null): the model is damaged
            raise ApiError(500, str(error)) from None
        except asyncio.CancelledError:
            job.abandon()
            if watch.done() and not watch.cancelled():  # the client left: nobody reads this answer
                raise ApiError(499, "the client closed the connection") from None
            raise
        finally:
            watch.cancel()

    def prompt(self, prompt_name: str | None) -> str:
        """The prompt put before each text: the request's prompt_name, else the server's (--prompt-name,
        --prompt, or the checkpoint's default)."""
        if prompt_name is None:
            return self.encoder.resolve_prompt(prompt=self.settings.prompt)
        try:
            return self.encoder.resolve_prompt(prompt_name)
        except ValueError as error:
            raise ApiError(422, str(error), param="prompt_name") from None

    async def embed(
        self, request: Request, texts: list[str], truncate: bool, endpoint: str, prompt_name: str | None = None
    ) -> Embedded:
        texts = self.check_request(texts)
        prompt = self.prompt(prompt_name)
        if prompt:
            texts = [prompt + text for text in texts]
        encodings, n_tokens = await run_in_threadpool(token_ids, self.encoder.tokenizer, texts)
        limit = self.encoder.max_seq_length
        over = [i for i, n in enumerate(n_tokens) if n > limit]
        if over and not truncate:
            raise ApiError(
                422,
                f"input {over[0]} is over this model's {limit} tokens; send truncate=true to embed the first "
                f"{limit} tokens of each ({len(over)} input(s) are over)",
                param="input",
            )
        job = Job("embed", encodings=encodings, prompt_length=self.encoder.prompt_length(prompt))
        vectors = await self.run(job, request)
        tokens = [min(n, limit) for n in n_tokens]
        self.metrics.inputs.labels(endpoint).inc(len(texts))
        self.metrics.prompt_tokens.inc(sum(tokens))
        return Embedded(vectors, tokens, over)

    async def tokenize(self, texts: list[str], prompt_name: str | None, special: bool) -> tuple[memoryview, list[int]]:
        """What /embed would give the model, as /tokenize's JSON (`tokens_json`), and the indices of the
        texts that were cut."""
        texts = self.check_request(texts)
        prompt = self.prompt(prompt_name)
        texts = [prompt + text for text in texts]
        return await run_in_threadpool(tokens_json, self.encoder.tokenizer, texts, len(prompt), special)

    async def predict(self, request: Request, texts: list[str], with_embedding: bool) -> list[dict]:
        if self.predict_texts is None:
            raise ApiError(404, "this server was started with --no-heads: /predict is off")
        texts = self.check_request(texts)
        chars = self.settings.max_predict_chars
        for i, text in enumerate(texts):
            if len(text) > chars:
                raise ApiError(413, f"input {i} has {len(text):,} characters; {self.predict_limits()}")
        pieces = await run_in_threadpool(self.count_pieces, texts)
        job = Job("predict", texts=texts, with_embedding=with_embedding, pieces=pieces)
        records = await self.run(job, request)
        self.metrics.inputs.labels("/predict").inc(len(texts))
        return records

    def count_pieces(self, texts: list[str]) -> list[int]:
        """Each text's word pieces, or 413 for the first text over max_predict_pieces. A text is read only
        as far as the cap (bounded.py), so a refused text costs no more than an accepted one."""
        reader = bounded_reader(self.predict_tokenizer or self.encoder.tokenizer)
        cap = self.settings.max_predict_pieces
        counts = []
        for i, text in enumerate(texts):
            counts.append(reader.count(text, cap))
            if counts[-1] > cap:
                raise ApiError(413, f"input {i} has more than {cap:,} word pieces; {self.predict_limits()}")
        return counts

    def predict_limits(self) -> str:
        return (
            f"/predict reads at most {self.settings.max_predict_pieces:,} word pieces and "
            f"{self.settings.max_predict_chars:,} characters per text: split it into shorter texts"
        )

    def served(self, model: str) -> bool:
        names = {self.settings.model_name.lower(), *self.settings.model_aliases}
        return model.lower() in names


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

    @app.post("/v1/embeddings", summary="OpenAI-compatible embeddings")
    async def openai_embeddings(request: Request, body: OpenAIEmbeddingRequest) -> Response:
        if not service.served(body.model):
            raise ApiError(
                404,
                f"the model {body.model!r} is not served here; this server serves {settings.model_name!r}",
                param="model",
                code="model_not_found",
            )
        if body.dimensions is not None and not 1 <= body.dimensions <= encoder.dim:
            raise ApiError(422, f"dimensions must be between 1 and {encoder.dim}", param="dimensions")
        embedded = await service.embed(request, as_list(body.input), body.truncate, "/v1/embeddings")
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

    @app.get("/v1/models", summary="The model served, as OpenAI lists models")
    async def openai_models() -> dict:
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "owned_by": "minilm"}]}

    @app.post("/embed", summary="TEI-compatible embeddings: a list of vectors")
    async def tei_embed(request: Request, body: EmbedRequest) -> Response:
        embedded = await service.embed(request, as_list(body.inputs), body.truncate, "/embed", body.prompt_name)
        vectors = normalized(embedded.vectors) if body.normalize else embedded.vectors
        return json_response(vectors, truncation_header(embedded.truncated))

    @app.post("/predict", summary="Question type, sentiment and entities (character offsets), one encoder pass")
    async def predict(request: Request, body: PredictRequest) -> Response:
        return json_response(await service.predict(request, as_list(body.inputs), body.with_embedding))

    @app.post(
        "/tokenize", summary="The tokens the encoder sees, prompt included (truncated to max_seq_length), with offsets"
    )
    async def tokenize(body: TokenizeRequest) -> Response:
        content, over = await service.tokenize(as_list(body.inputs), body.prompt_name, body.add_special_tokens)
        return Response(content, media_type="application/json", headers=truncation_header(over))

    @app.api_route("/health", methods=["GET", "HEAD"], summary="200 once warmed up; 503 before and while stopping")
    async def health() -> Response:
        if not service.ready:
            return error_response("/health", ApiError(503, "warming up or shutting down"), service.metrics)
        return json_response({"status": "ok", "model": settings.model_name, "dtype": encoder.dtype})

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(service.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    routes = {route.path for route in app.routes}
    app.add_middleware(Guard, service=service, routes=routes)
    return app
