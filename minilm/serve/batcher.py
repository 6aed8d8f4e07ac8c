"""Dynamic batching for the server: many clients' texts share one encoder pass, each gets its own answer.

A caller takes a place in the queue first (`Batcher.reserve`, or `QueueFull` when `max_queue`
jobs are already in, tokenizing, waiting or running), then submits a `Job` (its tokenized texts and
a future). Memory is then bounded by max_queue jobs of at most max_request_inputs texts, each
tokenized to at most max_seq_length tokens (the server reads a very long text only as far as that
needs: bounded.py). The server admits its requests itself, earlier (app.Guard: from their headers
until their answers are out), and submits each job with `submit`, so its jobs stay within this
count (but for abandoned ones the worker has not dropped yet: the server answers that QueueFull
429 too). A job whose client went away is abandoned: the worker drops its texts that have not run
yet, between batches.

One worker thread owns the model. It works in **rounds**: it takes every embedding job waiting at
that moment, puts all their texts together in the order they came, and cuts them into batches of at
most `max_batch_size` texts and `max_batch_tokens` tokens (`round_batches`; by default encode's own
limits for the encoder's dtype and device, `SentenceEncoder.batching`). So single texts from many
clients share a batch, and a big request is split over several batches. A job's future is answered
as soon as its last text is done, with its vectors in its own order. Jobs that arrive during a round
wait for the next one, so no text waits longer than one round behind the jobs ahead of it.

A batch's tokens are its texts' own, padding not counted, where encode counts padded tokens: the
server runs the packed encoder (`SentenceEncoder.use_packed`; half precision and int8 are packed
anyway), whose matmuls compute no padding rows. Over encode's longest-first batches of a corpus the
two counts nearly agree; over a round of 32 mixed sentences the padded count is twice the real one,
and a budget of 1,024 padded tokens cut such rounds into calls half as big: 11 % fewer sentences/s
for the model alone, about 5 % for the server under 64 single-sentence clients.
The attention alone pads each text to the batch's longest, so a batch is also held to
PADDED_PER_TOKEN times the budget padded (8 x 1,024: the 8,192 padded tokens the server's batches
had before, with their known memory), which one long text among many short ones can reach.

Prediction jobs (`/predict`) read whole texts in overlapping windows, so their work grows with their
texts; each round runs one **chunk** of them after its embeddings: texts of at most `predict_pieces`
word pieces and `predict_chars` characters together (at least one text), taken from the predict jobs
in turn, so that a big request neither holds the model for long nor keeps a small one waiting behind
all of it. Between chunks, the worker serves the embeddings that came in and drops abandoned jobs.

Call jobs (`/search`'s scan of a folder, `/rerank`'s cross-encoder) run a function on the worker,
after a round's embeddings: the model's cores are never shared with a second thread team.

`close` takes no new jobs and lets the admitted ones finish; given a timeout, what is left when it
expires is failed with `Closed`, and the worker stops after its current batch.

The worker runs torch with `threads` intra-op threads, set in the worker thread itself. With GNU
OpenMP (torch's CPU builds) the process must not also hold another thread's OpenMP team: when more
OpenMP threads exist than CPUs, libgomp cuts its busy-wait from 300,000 spins to 100 (see
GOMP_SPINCOUNT in its manual), every parallel region then ends in a futex sleep, and one sentence
took 26 ms instead of 12 on 2 cores. The server's entry point therefore loads the model with one
thread and hands the cores to this worker.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np
import torch

from ..encoders.sentence_encoder import SentenceEncoder
from ..text.tokenization import AnyEncoding


class QueueFull(Exception):
    """max_queue requests are already admitted; the client should retry later (HTTP 429)."""


class Closed(Exception):
    """The server is shutting down and takes no new work (HTTP 503)."""


class Abandoned(Exception):
    """The job's client went away before its texts were run."""


@dataclass(eq=False)  # a job is itself: compared and hashed by identity
class Job:
    """One request's work. kind "embed": `encodings` in, (N, C) float32 out, not normalized (the caller
    normalizes, since clients choose). kind "predict": `texts` in, one heads.predict record per text out;
    `pieces`, each text's word pieces when the caller counted them, size the chunks."""

    kind: Literal["embed", "predict", "call"]
    encodings: list[AnyEncoding] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    with_embedding: bool = False
    prompt_length: int = 0  # embed: leading positions pooling leaves out (SentenceEncoder.prompt_length)
    pieces: list[int] = field(default_factory=list)  # predict: word pieces per text (empty: its characters count)
    future: Future = field(default_factory=Future)
    submitted: float = field(default_factory=time.perf_counter)
    abandoned: bool = False  # its client went away: the worker drops its texts not yet run
    records: list[dict] = field(default_factory=list)  # predict: the records of its texts done so far
    call: Callable[[], Any] | None = None  # call: run on the worker, between rounds (a search, a rerank)

    def abandon(self) -> None:
        self.abandoned = True
        self.future.cancel()  # skipped whole if the worker has not started it

    def size(self, i: int) -> int:
        """Text i's share of a predict chunk: its word pieces and [CLS]/[SEP], or its characters uncounted."""
        return self.pieces[i] + 2 if self.pieces else len(self.texts[i]) + 2

    def __len__(self) -> int:
        return len(self.encodings) if self.kind == "embed" else len(self.texts)


PADDED_PER_TOKEN = 8  # a batch's padded tokens at most, per token of its budget (module docstring)


def round_batches(lengths: list[int], max_texts: int, max_tokens: int | None) -> Iterator[list[int]]:
    """Indices of a round's texts in their order, cut into batches of at most max_texts texts, max_tokens
    tokens of their own and PADDED_PER_TOKEN x max_tokens padded (module docstring); a text over either
    gets a batch of its own."""
    batch: list[int] = []
    tokens = longest = 0
    for i, n in enumerate(lengths):
        full = len(batch) == max_texts
        if max_tokens is not None:
            padded = (len(batch) + 1) * max(longest, n)  # with text i
            full = full or tokens + n > max_tokens or padded > PADDED_PER_TOKEN * max_tokens
        if batch and full:
            yield batch
            batch, tokens, longest = [], 0, 0
        batch.append(i)
        tokens, longest = tokens + n, max(longest, n)
    if batch:
        yield batch


def settle(future: Future, result: Any = None, error: BaseException | None = None) -> None:
    """Answer a future unless it is answered already (the worker and close() may race at the end)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


@dataclass
class BatchStats:
    """What one encoder batch held: for the /metrics histograms."""

    kind: Literal["embed", "predict"]
    texts: int
    requests: int  # distinct jobs with a text in the batch: > 1 means clients shared the pass
    tokens: int  # real tokens, [CLS]/[SEP] included (embed batches; 0 for predict)
    seconds: float


class Ticket:
    """A reserved place in the queue (Batcher.reserve): submit one job with it, or leave the `with`
    block without one and the place is given back."""

    def __init__(self, batcher: Batcher):
        self.batcher, self.used = batcher, False

    def submit(self, job: Job) -> Future:
        self.used = True
        try:
            return self.batcher._enqueue(job)
        except BaseException:
            self.batcher._answered()
            raise

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc) -> None:
        if not self.used:
            self.used = True
            self.batcher._answered()


class Batcher:
    """The queue and the one inference worker thread (see the module docstring)."""

    def __init__(
        self,
        encoder: SentenceEncoder,
        predict: Callable[[list[str], bool], list[dict]] | None = None,
        max_batch_tokens: int | None = None,
        max_batch_size: int | None = None,
        max_queue: int = 512,
        on_batch: Callable[[BatchStats], None] | None = None,
        threads: int | None = None,
        predict_pieces: int = 2048,
        predict_chars: int = 131072,
    ):
        if max_batch_tokens is not None and max_batch_tokens < encoder.max_seq_length:
            raise ValueError(
                f"max_batch_tokens ({max_batch_tokens}) must be at least max_seq_length ({encoder.max_seq_length}),"
                " so that the longest text fits in a batch"
            )
        if max_batch_tokens is None or max_batch_size is None:  # encode's defaults for this dtype and device
            default_size, default_tokens = encoder.batching()
            if max_batch_tokens is None and default_tokens is not None:
                max_batch_tokens = max(default_tokens, encoder.max_seq_length)
            max_batch_size = default_size if max_batch_size is None else max_batch_size
        if min(max_queue, max_batch_size, predict_pieces, predict_chars) < 1:
            raise ValueError("max_queue, max_batch_size, predict_pieces and predict_chars must be at least 1")
        self.encoder = encoder
        self.predict = predict
        self.max_batch_tokens = max_batch_tokens  # None: no token cap (encode's default on a GPU)
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.on_batch = on_batch or (lambda stats: None)
        self.threads = threads  # torch intra-op threads of the worker; None: leave torch's setting
        self.predict_pieces = predict_pieces  # one predict chunk: word pieces ([CLS]/[SEP] included) ...
        self.predict_chars = predict_chars  # ... and characters, at most (or one text, if it is over)
        self._waiting: list[Job] = []
        self._predicting: deque[Job] = deque()  # predict jobs started, the next chunk's first job in front
        self._admitted = 0  # jobs submitted and not yet answered (waiting or in the current round)
        self._closing = False
        self._stopped = False  # close() timed out: the worker fails what is left and stops
        self._lock = threading.Condition()
        self._worker = threading.Thread(target=self._run, name="minilm-inference", daemon=True)
        self._worker.start()

    @property
    def depth(self) -> int:
        """Requests admitted and not yet answered."""
        return self._admitted

    def reserve(self) -> Ticket:
        """A place in the queue, taken before the request is tokenized, so that tokenizing counts against
        max_queue too. QueueFull when max_queue requests are in, Closed after close()."""
        with self._lock:
            if self._closing:
                raise Closed("the server is shutting down")
            if self._admitted >= self.max_queue:
                raise QueueFull(f"{self._admitted} requests are queued (--max-queue {self.max_queue})")
            self._admitted += 1
        return Ticket(self)

    def submit(self, job: Job) -> Future:
        """Reserve and queue a job at once; its future gets the result."""
        with self.reserve() as ticket:
            return ticket.submit(job)

    def close(self, timeout: float | None = None) -> None:
        """Take no new jobs, finish every admitted one, stop the worker. With a timeout, the jobs not done
        when it expires are failed with Closed, and the worker stops after its current batch; close waits
        for that batch (it is bounded: max_batch_tokens, or one predict chunk), so that no model call
        outlives the batcher (torch running in a thread while the interpreter exits can crash it)."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        self._worker.join(timeout)
        if self._worker.is_alive():
            with self._lock:
                self._stopped = True
                left, self._waiting = self._waiting, []
            for job in left:
                settle(job.future, error=Closed("the server stopped before this request was run"))
            self._worker.join()

    def _enqueue(self, job: Job) -> Future:
        if job.kind == "predict" and self.predict is None:
            raise ValueError("this server was started without heads")
        with self._lock:  # (re-entrant: the callback takes it too)
            if self._stopped:  # a place reserved before close(), used after it timed out
                raise Closed("the server stopped before this request was run")
            job.future.add_done_callback(self._answered)  # answered or cancelled: the place is free again
            self._waiting.append(job)
            self._lock.notify()
        return job.future

    def _answered(self, _future: Future | None = None) -> None:
        with self._lock:
            self._admitted -= 1

    # ------------------------------------------------------------------ the worker

    def _run(self) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        while True:
            with self._lock:
                while not self._waiting and not self._predicting and not self._closing:
                    self._lock.wait()
                if self._stopped or (not self._waiting and not self._predicting):  # closing, and nothing left
                    break
                round_jobs, self._waiting = self._waiting, []
            started = [job for job in round_jobs if job.future.set_running_or_notify_cancel()]  # not cancelled
            self._predicting.extend(job for job in started if job.kind == "predict")
            embeds = [job for job in started if job.kind == "embed"]
            if embeds:
                try:
                    self._embed_round(embeds)
                except Exception as error:  # a failed batch fails its round; the worker lives on
                    for job in embeds:
                        settle(job.future, error=error)
            for job in (job for job in started if job.kind == "call"):  # on this thread: no second thread team
                if job.abandoned:
                    settle(job.future, error=Abandoned())
                    continue
                try:
                    settle(job.future, job.call())
                except Exception as error:
                    settle(job.future, error=error)
            if self._predicting:
                self._predict_chunk()
        for job in self._predicting:  # stopped: close() failed the jobs that were waiting; these are ours
            settle(job.future, error=Closed("the server stopped before this request was done"))

    def _embed_round(self, jobs: list[Job]) -> None:
        results = {id(job): np.empty((len(job), self.encoder.dim), dtype=np.float32) for job in jobs}
        remaining = {id(job): len(job) for job in jobs}
        # texts pooled without the same number of prompt positions cannot share a batch
        for prompt_length in sorted({job.prompt_length for job in jobs}):
            mine = [job for job in jobs if job.prompt_length == prompt_length]
            self._embed_texts(mine, prompt_length, results, remaining)
        for job in jobs:  # abandoned or stopped part way, or a request of no texts (it has no batch)
            if job.abandoned:
                settle(job.future, error=Abandoned())
            elif remaining[id(job)]:
                settle(job.future, error=Closed("the server stopped before this request was done"))
            else:
                settle(job.future, results[id(job)])

    def _embed_texts(self, jobs: list[Job], prompt_length: int, results: dict, remaining: dict) -> None:
        items = [(job, i) for job in jobs for i in range(len(job))]  # every text of these jobs, in order
        lengths = [len(job.encodings[i].ids) for job, i in items]
        for batch in round_batches(lengths, self.max_batch_size, self.max_batch_tokens):
            if self._stopped:
                return
            start = time.perf_counter()
            kept = [k for k in batch if not items[k][0].abandoned]
            if not kept:
                continue
            chosen = [items[k] for k in kept]
            vectors = self.encoder.encode_encodings(  # one call: its padded size is its cap, so encode keeps it whole
                [job.encodings[i] for job, i in chosen],
                batch_size=len(chosen),
                max_batch_tokens=len(chosen) * max(lengths[k] for k in kept),
                normalize=False,
                prompt_length=prompt_length,
            )
            for (job, i), vector in zip(chosen, vectors):
                results[id(job)][i] = vector
                remaining[id(job)] -= 1
                if remaining[id(job)] == 0:
                    settle(job.future, results[id(job)])
            self.on_batch(
                BatchStats(
                    "embed",
                    len(chosen),
                    len({id(job) for job, _ in chosen}),
                    sum(lengths[k] for k in kept),
                    time.perf_counter() - start,
                )
            )

    def _predict_chunk(self) -> None:
        """One chunk of predict texts (module docstring). Abandoned jobs are dropped first; the job the chunk
        starts with then goes to the back of the line, so that jobs take turns."""
        assert self.predict is not None
        for job in [job for job in self._predicting if job.abandoned or self._stopped or not job.texts]:
            self._predicting.remove(job)
            if job.abandoned:
                settle(job.future, error=Abandoned())
            else:
                settle(job.future, [], error=Closed("the server stopped") if self._stopped else None)
        chosen = self._next_chunk()
        if not chosen:
            return
        start = time.perf_counter()
        jobs = list(dict.fromkeys(job for job, _ in chosen))
        self._predicting.rotate(-1)
        try:
            records = self.predict([job.texts[i] for job, i in chosen], any(job.with_embedding for job in jobs))
        except Exception as error:  # a failed chunk fails its jobs; the worker lives on
            for job in jobs:
                self._predicting.remove(job)
                settle(job.future, error=error)
            return
        for (job, _), record in zip(chosen, records):
            if not job.with_embedding:
                record.pop("embedding", None)
            job.records.append(record)
        for job in jobs:
            if len(job.records) == len(job):
                self._predicting.remove(job)
                settle(job.future, job.records)
        self.on_batch(BatchStats("predict", len(chosen), len(jobs), 0, time.perf_counter() - start))

    def _next_chunk(self) -> list[tuple[Job, int]]:
        """(job, text index) pairs, from the jobs in line order (each job's next texts, while they fit), up to
        predict_pieces and predict_chars: at least one text, however long (the server refuses a text over
        either before it gets here)."""
        chosen: list[tuple[Job, int]] = []
        pieces = chars = 0
        for job in self._predicting:
            for i in range(len(job.records), len(job)):  # its next texts, in order, while they fit
                size, length = job.size(i), len(job.texts[i])
                if chosen and (pieces + size > self.predict_pieces or chars + length > self.predict_chars):
                    break
                chosen.append((job, i))
                pieces, chars = pieces + size, chars + length
        return chosen
