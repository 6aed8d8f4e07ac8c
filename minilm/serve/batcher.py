"""Dynamic batching for the server: many clients' texts share one encoder pass, each gets its own answer.

A request takes a place in the queue first (`Batcher.reserve`, or `QueueFull` when `max_queue`
requests are already in, tokenizing, waiting or running), then becomes a `Job` (its tokenized texts
and a future). Memory is then bounded by max_queue requests of at most max_request_inputs texts,
each tokenized to at most max_seq_length tokens (the server reads a very long text only as far as
that needs: app.py's `tokenize_bounded`). A job whose client went away is cancelled, and the worker
skips it unless its round has already started.

One worker thread owns the model. It works in **rounds**: it takes every job waiting at that moment,
puts all their texts together, longest first, and cuts them into batches of at most
`max_batch_tokens` padded tokens (`length_sorted_batches`, as `SentenceEncoder.encode` does). So
single texts from many clients share a batch, and a big request is split over several batches.
A job's future is answered as soon as its last text is done, with its vectors in its own order.
Jobs that arrive during a round wait for the next one, so no text waits longer than one round
behind the jobs ahead of it: longest-first inside a round cannot starve a short text.

Prediction jobs (`/predict`) go through the same worker, a round's jobs in one `predict` call, so
the model is never used by two threads at once.

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
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np
import torch

from ..sentence_encoder import SentenceEncoder
from ..text.tokenization import AnyEncoding, length_sorted_batches


class QueueFull(Exception):
    """max_queue requests are already admitted; the client should retry later (HTTP 429)."""


class Closed(Exception):
    """The server is shutting down and takes no new work (HTTP 503)."""


class Abandoned(Exception):
    """The job's client went away before its texts were run."""


@dataclass
class Job:
    """One request's work. kind "embed": `encodings` in, (N, C) float32 out, not normalized (the caller
    normalizes, since clients choose). kind "predict": `texts` in, one heads.predict record per text out."""

    kind: Literal["embed", "predict"]
    encodings: list[AnyEncoding] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    with_embedding: bool = False
    prompt_length: int = 0  # embed: leading positions pooling leaves out (SentenceEncoder.prompt_length)
    future: Future = field(default_factory=Future)
    submitted: float = field(default_factory=time.perf_counter)
    abandoned: bool = False  # its client went away: the worker drops its texts not yet run

    def abandon(self) -> None:
        self.abandoned = True
        self.future.cancel()  # skipped whole if its round has not started

    def __len__(self) -> int:
        return len(self.encodings) if self.kind == "embed" else len(self.texts)


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
        max_batch_tokens: int = 8192,
        max_batch_size: int = 256,
        max_queue: int = 512,
        on_batch: Callable[[BatchStats], None] | None = None,
        threads: int | None = None,
    ):
        if max_batch_tokens < encoder.max_seq_length:
            raise ValueError(
                f"max_batch_tokens ({max_batch_tokens}) must be at least max_seq_length ({encoder.max_seq_length}),"
                " so that the longest text fits in a batch"
            )
        if max_queue < 1 or max_batch_size < 1:
            raise ValueError("max_queue and max_batch_size must be at least 1")
        self.encoder = encoder
        self.predict = predict
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.on_batch = on_batch or (lambda stats: None)
        self.threads = threads  # torch intra-op threads of the worker; None: leave torch's setting
        self._waiting: list[Job] = []
        self._admitted = 0  # jobs submitted and not yet answered (waiting or in the current round)
        self._closing = False
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
        """Take no new jobs, finish every admitted one, stop the worker."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        self._worker.join(timeout)

    def _enqueue(self, job: Job) -> Future:
        if job.kind == "predict" and self.predict is None:
            raise ValueError("this server was started without heads")
        job.future.add_done_callback(self._answered)  # answered or cancelled: the place is free again
        with self._lock:
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
                while not self._waiting and not self._closing:
                    self._lock.wait()
                if not self._waiting:  # closing, and nothing left
                    return
                round_jobs, self._waiting = self._waiting, []
            for kind, run in (("embed", self._embed_round), ("predict", self._predict_round)):
                jobs = [job for job in round_jobs if job.kind == kind and job.future.set_running_or_notify_cancel()]
                if jobs:
                    try:
                        run(jobs)
                    except Exception as error:
                        for job in jobs:
                            if not job.future.done():
                                job.future.set_exception(error)

    def _embed_round(self, jobs: list[Job]) -> None:
        results = {id(job): np.empty((len(job), self.encoder.dim), dtype=np.float32) for job in jobs}
        remaining = {id(job): len(job) for job in jobs}
        # texts pooled without the same number of prompt positions cannot share a batch
        for prompt_length in sorted({job.prompt_length for job in jobs}):
            mine = [job for job in jobs if job.prompt_length == prompt_length]
            self._embed_texts(mine, prompt_length, results, remaining)
        for job in jobs:  # abandoned part way, or a request of no texts (it has no batch)
            if not job.future.done():
                if job.abandoned:
                    job.future.set_exception(Abandoned())
                else:
                    job.future.set_result(results[id(job)])

    def _embed_texts(self, jobs: list[Job], prompt_length: int, results: dict, remaining: dict) -> None:
        items = [(job, i) for job in jobs for i in range(len(job))]  # every text of these jobs
        lengths = [len(job.encodings[i].ids) for job, i in items]
        for batch in length_sorted_batches(lengths, self.max_batch_size, self.max_batch_tokens):
            start = time.perf_counter()
            chosen = [items[k] for k in batch if not items[k][0].abandoned]
            if not chosen:
                continue
            vectors = self.encoder.encode_encodings(
                [job.encodings[i] for job, i in chosen],
                batch_size=len(chosen),
                normalize=False,
                prompt_length=prompt_length,
            )
            for (job, i), vector in zip(chosen, vectors):
                results[id(job)][i] = vector
                remaining[id(job)] -= 1
                if remaining[id(job)] == 0:
                    job.future.set_result(results[id(job)])
            self.on_batch(
                BatchStats(
                    "embed",
                    len(chosen),
                    len({id(job) for job, _ in chosen}),
                    sum(len(job.encodings[i].ids) for job, i in chosen),
                    time.perf_counter() - start,
                )
            )

    def _predict_round(self, jobs: list[Job]) -> None:
        assert self.predict is not None
        start = time.perf_counter()
        texts = [text for job in jobs for text in job.texts]
        records = self.predict(texts, any(job.with_embedding for job in jobs))
        offset = 0
        for job in jobs:
            mine: list[dict[str, Any]] = records[offset : offset + len(job)]
            offset += len(job)
            if not job.with_embedding:
                for record in mine:
                    record.pop("embedding", None)
            job.future.set_result(mine)
        self.on_batch(BatchStats("predict", len(texts), len(jobs), 0, time.perf_counter() - start))
