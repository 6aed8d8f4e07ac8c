"""The HTTP API: routes, request checks and the service behind them, on FastAPI. The batching is `batcher.py`'s,
the middleware in front (admission, body limits) `guard.py`'s, the error shapes `errors.py`'s.

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
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Literal, Optional, Union

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..sentence_encoder import NonFiniteOutput, SentenceEncoder, check_texts
from ..text.tokenization import SentenceTokenizer
from .batcher import Batcher, Closed, Job, QueueFull
from .bounded import BATCH_CHARS, batches_of_chars, bounded_reader, tokenize_bounded
from .errors import ApiError, error_response
from .guard import Guard
from .metrics import Metrics

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


# ---------------------------------------------------------------------------- request bodies


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "an object" if isinstance(value, dict) else type(value).__name__


def text_or_texts(value: Any) -> Any:
    """A string or a non-empty list of strings; anything else is a one-line reason."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise ValueError(f"must be a string or a list of strings, got {json_type(value)}")
    if not value:
        raise ValueError("is an empty list; send at least one text")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            hint = " (token-id input is not supported; send text)" if isinstance(item, (int, list)) else ""
            raise ValueError(f"item {i} is {json_type(item)}, expected a string{hint}")
    return value


Texts = Annotated[Union[str, list[str]], BeforeValidator(text_or_texts)]
Strict = ConfigDict(extra="forbid", strict=True)


class OpenAIEmbeddingRequest(BaseModel):
    model_config = Strict
    input: Texts = Field(description="a text or a list of texts (at most --max-request-inputs)")
    model: str = Field(description="the served model's name, as GET /v1/models lists it")
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32 bytes")
    dimensions: Optional[int] = Field(  # noqa: UP045 (pydantic reads it at run time; Python 3.9 has no X | None)
        None, description="keep the first N dimensions, then L2-normalize again (the model is not Matryoshka-trained)"
    )
    user: Optional[str] = Field(None, description="accepted and ignored")  # noqa: UP045
    truncate: bool = Field(True, description="minilm extension: false refuses texts over max_seq_length")


class EmbedRequest(BaseModel):
    model_config = Strict
    inputs: Texts
    normalize: bool = True
    truncate: bool = Field(False, description="false (TEI's default): a text over max_seq_length is a 422")
    truncation_direction: Literal["Right", "right"] = Field("Right", description="only Right: keep the first tokens")
    prompt_name: str | None = Field(None, description="one of the checkpoint's prompts, put before every input")


class PredictRequest(BaseModel):
    model_config = Strict
    inputs: Texts
    with_embedding: bool = Field(False, description="add each text's sentence embedding, from the same pass")


class TokenizeRequest(BaseModel):
    model_config = Strict
    inputs: Texts
    add_special_tokens: bool = True
    prompt_name: str | None = Field(
        None, description="one of the checkpoint's prompts (as /embed); default: the server's"
    )


def validation_message(error: RequestValidationError) -> str:
    """FastAPI's list of pydantic errors -> one line: where, and what is wrong."""
    first = error.errors()[0]
    if first.get("type") == "json_invalid":
        return f"the body is not valid JSON: {first.get('ctx', {}).get('error', 'decode error')}"
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    if where == "body" and first.get("type") in ("model_attributes_type", "dict_type", "model_type"):
        return "the body must be a JSON object (and the content-type application/json)"
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        message = "is required"
    return f"{where}: {message}"


def as_list(texts: str | list[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else texts


def normalized(vectors: np.ndarray) -> np.ndarray:
    """L2 rows as sentence-transformers' Normalize: x / max(|x|, 1e-12)."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


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


def tokenized(tokenizer: SentenceTokenizer, texts: list[str]) -> Iterator[tuple[list[int], list, list[int]]]:
    """`tokenize_bounded` over texts of up to BATCH_CHARS characters at a time: (indices, encodings, token
    counts) per batch. The tokenizer's Encodings are large (about 50 KB each at 256 tokens: they keep
    their untruncated capacity and the overflow), so only one batch of them lives at once."""
    for batch in batches_of_chars(list(range(len(texts))), [len(t) for t in texts], BATCH_CHARS):
        encodings, counts = tokenize_bounded(tokenizer, [texts[i] for i in batch])
        yield batch, encodings, counts


@dataclass(frozen=True)
class TokenIds:
    """What the model reads of an encoding (`SentenceTokenizer.pad`: ids and token types), kept while a
    request waits for the worker: about 1.5 KB at 256 tokens, where the Encoding holds 50 KB (2,048 texts
    held 100 MB each). It stands in for the Encoding in a Job."""

    ids: np.ndarray  # (T,) int32
    type_ids: np.ndarray  # (T,) int8

    @classmethod
    def of(cls, encoding) -> TokenIds:
        return cls(np.asarray(encoding.ids, dtype=np.int32), np.asarray(encoding.type_ids, dtype=np.int8))


def token_ids(tokenizer: SentenceTokenizer, texts: list[str]) -> tuple[list[TokenIds], list[int]]:
    """Each text's TokenIds (truncated, special tokens added) and its token count (`tokenize_bounded`)."""
    ids, counts = [], []
    for _, encodings, n in tokenized(tokenizer, texts):
        ids += [TokenIds.of(encoding) for encoding in encodings]
        counts += n
    return ids, counts


def tokens_json(
    tokenizer: SentenceTokenizer, texts: list[str], prompt: int, special_tokens: bool
) -> tuple[memoryview, list[int]]:
    """/tokenize's answer, and the indices of the texts cut to max_seq_length. The answer is a JSON list per
    text of {"id", "text", "special", "prompt", "start", "stop"}, offsets into the text after the prompt
    (null for [CLS]/[SEP] and the prompt's own tokens). Built one batch of encodings at a time and one
    text's dicts at a time: 2,048 texts of 256 tokens are 38 MB of JSON, and were 285 MB as dicts."""
    out, over, limit = bytearray(b"["), [], tokenizer.max_seq_length
    for batch, encodings, counts in tokenized(tokenizer, texts):
        for i, encoding, n in zip(batch, encodings, counts):
            tokens = []
            for token_id, text, word, (start, stop) in zip(
                encoding.ids, encoding.tokens, encoding.word_ids, encoding.offsets
            ):
                special = word is None
                if special and not special_tokens:
                    continue
                in_prompt = not special and start < prompt  # offsets count from the text, after the prompt
                hidden = special or in_prompt
                tokens.append(
                    {
                        "id": token_id,
                        "text": text,
                        "special": special,
                        "prompt": in_prompt,
                        "start": None if hidden else start - prompt,
                        "stop": None if hidden else stop - prompt,
                    }
                )
            out += (b"," if i else b"") + orjson.dumps(tokens)
            if n > limit:
                over.append(i)
    out += b"]"
    return memoryview(out), over


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
