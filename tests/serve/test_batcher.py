"""The server's batcher without HTTP: many threads' jobs share batches, and each gets its own vectors back.

The reference is `SentenceEncoder.encode` of each job's own texts; the batches are read from the
stats the batcher reports to /metrics.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from minilm.encoders.sentence_encoder import normalized
from minilm.serve.batcher import PADDED_PER_TOKEN, Abandoned, Batcher, Closed, Job, QueueFull, round_batches


def jobs_of(encoder, groups: list[list[str]]) -> list[Job]:
    return [Job("embed", encodings=encoder.tokenizer.encode(texts)[0]) for texts in groups]


def test_jobs_from_many_threads_share_batches_and_each_gets_its_own_vectors(encoder, stsb_sentences):
    long_text = " ".join(stsb_sentences[:60])  # far over 256 tokens: truncated, as encode truncates
    groups = [[stsb_sentences[i]] for i in range(40)]  # 40 single-text clients
    groups += [stsb_sentences[100 + 7 * k : 107 + 7 * k] for k in range(8)]  # and 8 clients of 7 texts
    groups.append([long_text, "", stsb_sentences[5]])
    stats = []
    gate = threading.Event()
    batcher = Batcher(encoder, max_batch_tokens=1024, on_batch=stats.append)
    blocker = Job("embed", encodings=encoder.tokenizer.encode(["word " * 300] * 4)[0])
    batcher.submit(blocker)  # keeps the worker busy while the others queue up, so they share a round

    def client(job: Job) -> np.ndarray:
        gate.wait()
        return batcher.submit(job).result(timeout=60)

    jobs = jobs_of(encoder, groups)
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(client, job) for job in jobs]
        gate.set()
        results = [f.result() for f in futures]
    batcher.close()
    for texts, vectors in zip(groups, results):  # the server normalizes after the batcher, as encode does
        expected = encoder.encode(texts)
        assert vectors.shape == expected.shape
        np.testing.assert_allclose(normalized(vectors), expected, atol=1e-6, rtol=0)
    embed_batches = [s for s in stats if s.kind == "embed"]
    assert max(s.requests for s in embed_batches) > 1  # clients really shared a pass
    assert all(s.texts * 256 >= s.tokens for s in embed_batches)
    assert sum(s.texts for s in embed_batches) == 4 + sum(len(g) for g in groups)  # every text once, none lost


def test_a_full_queue_refuses_and_a_closed_batcher_takes_nothing(encoder):
    batcher = Batcher(encoder, max_queue=2)
    long = encoder.tokenizer.encode(["word " * 300] * 32)[0]
    first, second = batcher.submit(Job("embed", encodings=long)), batcher.submit(Job("embed", encodings=long))
    with pytest.raises(QueueFull, match="--max-queue 2"):
        batcher.submit(Job("embed", encodings=long))
    first.result(timeout=60), second.result(timeout=60)
    assert batcher.depth == 0
    last = batcher.submit(Job("embed", encodings=long[:1]))  # room again once answered
    batcher.close()  # drains what was admitted
    assert last.result(timeout=0).shape == (1, encoder.dim)
    with pytest.raises(Closed):
        batcher.submit(Job("embed", encodings=long[:1]))


def test_a_model_error_fails_its_round_and_the_worker_lives_on(encoder):
    class Broken:
        dim, max_seq_length, tokenizer, batching = (
            encoder.dim,
            encoder.max_seq_length,
            encoder.tokenizer,
            encoder.batching,
        )

        def __init__(self):
            self.calls = 0

        def encode_encodings(self, encodings, **kwargs):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("out of memory (simulated)")
            return encoder.encode_encodings(encodings, **kwargs)

    batcher = Batcher(Broken())
    one = encoder.tokenizer.encode(["A sentence."])[0]
    with pytest.raises(RuntimeError, match="simulated"):
        batcher.submit(Job("embed", encodings=one)).result(timeout=60)
    vectors = batcher.submit(Job("embed", encodings=one)).result(timeout=60)
    batcher.close()
    np.testing.assert_allclose(normalized(vectors), encoder.encode(["A sentence."]), atol=1e-6, rtol=0)


def test_batches_are_cut_as_encode_cuts_them_unless_the_server_says_otherwise(encoder):
    """By default the worker's batches have encode's limits for the encoder's dtype and device; a given
    token budget holds for the model call too (encode_encodings must not cut the batch again by its own)."""
    calls = []

    class Recording:
        dim, max_seq_length, tokenizer, batching = (
            encoder.dim,
            encoder.max_seq_length,
            encoder.tokenizer,
            encoder.batching,
        )

        def encode_encodings(self, encodings, **kwargs):
            calls.append((len(encodings), kwargs["batch_size"], kwargs["max_batch_tokens"]))
            return encoder.encode_encodings(encodings, **kwargs)

    texts, tokens = encoder.batching()
    default = Batcher(Recording())
    assert (default.max_batch_size, default.max_batch_tokens) == (texts, max(tokens, encoder.max_seq_length))
    default.close()
    given = Batcher(Recording(), max_batch_tokens=8192)
    given.submit(Job("embed", encodings=encoder.tokenizer.encode(["word " * 300] * 32)[0])).result(timeout=120)
    given.close()
    assert calls == [(32, 32, 8192)]  # 32 texts of 256 tokens: one batch, one call


def test_a_round_is_cut_in_order_by_its_texts_own_tokens_and_a_padded_bound():
    lengths = [14, 9, 30, 12, 22, 8, 11, 17]  # mixed sentences: 123 tokens, 240 padded to the longest
    assert list(round_batches(lengths, 256, 128)) == [list(range(8))]  # a padded count would cut it in two
    assert list(round_batches(lengths, 3, 128)) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert list(round_batches(lengths, 256, 64)) == [[0, 1, 2], [3, 4, 5, 6], [7]]  # 53, 53, 17 tokens
    one_long = [256] + [8] * 100  # the long text's batch stops at 8 x 1,024 padded tokens, not at 1,024 of its own
    batches = list(round_batches(one_long, 256, 1024))
    assert [len(b) for b in batches] == [PADDED_PER_TOKEN * 1024 // 256, 69]
    assert [i for batch in batches for i in batch] == list(range(101))
    assert list(round_batches([300, 5], 256, 256)) == [[0], [1]]  # a text over the budget: a batch of its own
    assert list(round_batches([5] * 5, 2, None)) == [[0, 1], [2, 3], [4]]  # no token budget (a GPU)


def test_max_batch_tokens_below_the_longest_text_is_refused(encoder):
    with pytest.raises(ValueError, match="at least max_seq_length"):
        Batcher(encoder, max_batch_tokens=100)


def test_the_worker_runs_torch_with_the_threads_it_was_given(encoder):
    """The entry point loads on one thread and gives the cores to the worker (batcher.py says why):
    the setting must hold in the worker thread itself, whatever the calling thread has."""
    seen = []

    def predict(texts: list[str], with_embedding: bool) -> list[dict]:
        seen.append(torch.get_num_threads())
        return [{} for _ in texts]

    before = torch.get_num_threads()
    batcher = Batcher(encoder, predict=predict, threads=1)
    batcher.submit(Job("predict", texts=["a"])).result(timeout=60)
    batcher.close()
    assert seen == [1]
    assert torch.get_num_threads() == before  # the caller's own setting is left alone


class GatedPredict:
    """A stand-in for the heads: each call records its texts, says it started, and waits for its turn."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.started = threading.Semaphore(0)
        self.go = threading.Semaphore(0)

    def __call__(self, texts: list[str], with_embedding: bool) -> list[dict]:
        self.calls.append(list(texts))
        self.started.release()
        assert self.go.acquire(timeout=60), "the test never let this chunk finish"
        return [{"text": text} for text in texts]

    def next_chunk(self) -> None:
        assert self.started.acquire(timeout=60), "the worker never started a chunk"


def test_predict_work_runs_in_chunks_so_embeddings_pass_and_an_abandoned_request_stops(encoder):
    """Before: one round ran every waiting predict text in one call, so a short embedding waited for all
    of it, and a request whose client had left ran to its end. Now the worker runs one chunk (here one
    text: 4 pieces and [CLS]/[SEP] against a budget of 10) between embedding rounds."""
    heads = GatedPredict()
    batcher = Batcher(encoder, predict=heads, predict_pieces=10)
    big = Job("predict", texts=[f"text {i}" for i in range(10)], pieces=[4] * 10)
    answer = batcher.submit(big)
    heads.next_chunk()  # the first chunk runs
    short = batcher.submit(Job("embed", encodings=encoder.tokenizer.encode(["A short text."])[0]))
    heads.go.release()
    assert short.result(timeout=60).shape == (1, encoder.dim)  # answered while the big request waits
    heads.next_chunk()  # its second chunk
    assert [len(call) for call in heads.calls] == [1, 1] and not answer.done()
    big.abandon()  # the client went away: nothing more of it runs
    heads.go.release()
    with pytest.raises(Abandoned):
        answer.result(timeout=60)
    assert len(heads.calls) == 2 and batcher.depth == 0
    batcher.close()


def test_predict_requests_take_turns_and_every_text_gets_its_record(encoder):
    heads = GatedPredict()
    batcher = Batcher(encoder, predict=heads, predict_pieces=10)
    big = batcher.submit(Job("predict", texts=[f"big {i}" for i in range(6)], pieces=[4] * 6))
    heads.next_chunk()
    small = batcher.submit(Job("predict", texts=["small"], pieces=[1]))
    for _ in range(2):  # big's first chunk, then its next text with small (6 + 3 <= 10), then big's third
        heads.go.release()
        heads.next_chunk()
    heads.go.release()
    assert small.result(timeout=60) == [{"text": "small"}]
    assert heads.calls[:3] == [["big 0"], ["big 1", "small"], ["big 2"]]
    for _ in range(3):  # big 3, 4 and 5
        heads.next_chunk()
        heads.go.release()
    assert big.result(timeout=60) == [{"text": f"big {i}"} for i in range(6)]  # in order, none lost
    batcher.close()


def test_close_with_a_timeout_fails_what_is_left_and_waits_only_for_the_batch_running(encoder):
    """The drain's end: close(timeout) must not wait for the worker's work to run out (it joined without
    a timeout, and a drained server took 20 s to exit): once the timeout is over, what is queued gets
    Closed, and close returns when the batch running ends."""
    heads = GatedPredict()
    batcher = Batcher(encoder, predict=heads)
    running = batcher.submit(Job("predict", texts=["running"]))
    heads.next_chunk()
    waiting = batcher.submit(Job("embed", encodings=encoder.tokenizer.encode(["never run"])[0]))
    closing = threading.Thread(target=batcher.close, kwargs={"timeout": 0.5})
    closing.start()  # the worker is stuck in its chunk
    with pytest.raises(Closed):
        waiting.result(timeout=60)
    assert closing.is_alive()  # it waits for the chunk running ...
    heads.go.release()
    closing.join(timeout=60)  # ... and no longer
    assert not closing.is_alive() and not batcher._worker.is_alive()
    assert running.result(timeout=0) == [{"text": "running"}]
    assert len(heads.calls) == 1
