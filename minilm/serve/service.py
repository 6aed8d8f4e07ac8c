"""The service behind the routes: the settings, the request checks, tokenizing (off the event loop but for
a short request), the queue places and the batcher (batcher.py) that owns the model. app.py's routes call
it; guard.py holds a request's queue place through it. A request's `receive` (ASGI's) is how its job learns
that the client went away.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive

from ..encoders.cross_encoder import CrossEncoder
from ..encoders.sentence_encoder import NonFiniteOutput, SentenceEncoder, check_texts, normalized
from ..search.searcher import Searcher
from ..text.tokenization import SentenceTokenizer
from .batcher import Batcher, Closed, Job, QueueFull
from .bounded import bounded_reader
from .errors import ApiError
from .metrics import Metrics
from .tokens import token_ids, tokens_json

WARM_UP_TEXTS = ["The server warms up on this sentence.", "word " * 300]  # the second one fills max_seq_length
# A request of at most this many texts and characters is tokenized on the event loop (about 50 us for a
# sentence): handing it to the thread pool and back cost the loop more than that, and woke a thread that took
# a core from the model. Bigger ones go to the pool, so that no request holds the loop for long.
INLINE_TOKENIZE_TEXTS, INLINE_TOKENIZE_CHARS = 4, 512


@dataclass
class ServeSettings:
    model_name: str  # what /v1/models lists and responses name
    model_aliases: frozenset[str] = frozenset()  # other names a request's "model" may use (lower case)
    max_batch_tokens: int | None = None  # tokens per encoder batch (batcher.py); None: encode's for the dtype
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


async def disconnected(receive: Receive) -> None:
    """Returns when the client has gone away (the body was read already, so receive() waits for that)."""
    while (await receive())["type"] != "http.disconnect":
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
    searcher: Searcher | None = None  # --index: the shard folder /search searches
    reranker: CrossEncoder | None = None  # --reranker: the cross-encoder of /rerank
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

    async def run(self, job: Job, receive: Receive) -> Any:
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
        watch = asyncio.ensure_future(disconnected(receive))
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
        self, receive: Receive, texts: list[str], truncate: bool, endpoint: str, prompt_name: str | None = None
    ) -> Embedded:
        texts = self.check_request(texts)
        prompt = self.prompt(prompt_name)
        if prompt:
            texts = [prompt + text for text in texts]
        if len(texts) <= INLINE_TOKENIZE_TEXTS and sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
            encodings, n_tokens = token_ids(self.encoder.tokenizer, texts)
        else:
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
        vectors = await self.run(job, receive)
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

    async def predict(self, receive: Receive, texts: list[str], with_embedding: bool) -> list[dict]:
        if self.predict_texts is None:
            raise ApiError(404, "this server was started with --no-heads: /predict is off")
        texts = self.check_request(texts)
        chars = self.settings.max_predict_chars
        for i, text in enumerate(texts):
            if len(text) > chars:
                raise ApiError(413, f"input {i} has {len(text):,} characters; {self.predict_limits()}")
        pieces = await run_in_threadpool(self.count_pieces, texts)
        job = Job("predict", texts=texts, with_embedding=with_embedding, pieces=pieces)
        records = await self.run(job, receive)
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

    async def search(self, receive: Receive, query: str, k: int) -> list[dict]:
        """The folder's k rows nearest the query: its embedding from a round of the batcher, then the scan as a
        call job on the worker (Searcher.search_vectors, index or exact)."""
        if self.searcher is None:
            raise ApiError(404, "this server was started without --index: /search is off")
        query = self.check_request([query])[0]
        if not query.strip():
            raise ApiError(422, "query is empty; send text to search for", param="query")
        prompt = self.searcher.query_prompt()
        encodings, _ = await run_in_threadpool(token_ids, self.encoder.tokenizer, [prompt + query])
        job = Job("embed", encodings=encodings, prompt_length=self.encoder.prompt_length(prompt))
        vector = normalized(await self.run(job, receive))
        searcher = self.searcher
        hits = await self.run(Job("call", call=lambda: searcher.search_vectors(vector, k)[0]), receive)
        self.metrics.inputs.labels("/search").inc(1)
        return [
            {"rank": h.rank, "score": h.score, "id": h.id, "text": h.text, **({"span": list(h.span)} if h.span else {})}
            for h in hits
        ]

    async def rerank(self, receive: Receive, query: str, texts: list[str], raw_scores: bool) -> list[float]:
        """TEI's /rerank: each text's score against the query, from the cross-encoder, as a call job."""
        if self.reranker is None:
            raise ApiError(404, "this server was started without --reranker: /rerank is off")
        texts = self.check_request(texts)
        [query] = self.check_request([query])
        chars = self.settings.max_predict_chars
        for i, text in enumerate([query, *texts]):
            if len(text) > chars:
                where = "query" if i == 0 else f"text {i - 1}"
                raise ApiError(413, f"{where} has {len(text):,} characters; /rerank reads at most {chars:,} per text")
        reranker = self.reranker
        identity = lambda logits: logits  # noqa: E731  (the logits; TEI applies the sigmoid unless raw_scores)
        pairs = [(query, text) for text in texts]
        logits = await self.run(Job("call", call=lambda: reranker.predict(pairs, activation_fn=identity)), receive)
        self.metrics.inputs.labels("/rerank").inc(len(texts))
        scores = np.asarray(logits, dtype=np.float64).reshape(-1)
        return (scores if raw_scores else 1 / (1 + np.exp(-scores))).tolist()

    def served(self, model: str) -> bool:
        names = {self.settings.model_name.lower(), *self.settings.model_aliases}
        return model.lower() in names
