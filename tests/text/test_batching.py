"""Batching: longest-first batches under a text count and a token budget (`length_sorted_batches`),
right padding with its mask (`right_pad`), and real texts embedded in token-budget batches coming
back in input order with the same vectors (max |Δ| <= 1e-6)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from minilm.encoders.batching import CPU_BATCH_TOKENS, DEFAULT_BATCH_TEXTS, default_batching
from minilm.encoders.sentence_encoder import SentenceEncoder
from minilm.text.tokenization import length_sorted_batches, right_pad

from conftest import with_runner

# --------------------------------------------------------------------------- length_sorted_batches


@pytest.mark.parametrize(
    "lengths, batch_size, max_batch_tokens, expected",
    [
        ([5, 9, 2, 9, 7], 2, None, [[1, 3], [4, 0], [2]]),  # longest first, ties in input order, 2 a batch
        ([3, 3, 3, 3, 10, 1], 8, 12, [[4], [0, 1, 2, 3], [5]]),  # 4 x 3 = 12 fits exactly; 10 + 10 would not
        ([3, 3, 3, 3, 10, 1], 3, 12, [[4], [0, 1, 2], [3, 5]]),  # batch_size cuts first, then 2 x 3 fits
        ([50, 4, 4], 8, 10, [[0], [1, 2]]),  # a text over the budget gets a batch of its own
        ([4, 4, 4, 4], 8, 3, [[0], [1], [2], [3]]),  # every text over the budget: one each
        ([], 4, 10, []),
    ],
)
def test_length_sorted_batches_hand_computed(lengths, batch_size, max_batch_tokens, expected):
    assert list(length_sorted_batches(lengths, batch_size, max_batch_tokens)) == expected


@pytest.mark.parametrize("seed", range(5))
def test_length_sorted_batches_invariants_on_random_lengths(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([1, 2, rng.randint(1, 256)]) for _ in range(rng.randint(1, 300))]
    batch_size, budget = rng.randint(1, 64), rng.randint(1, 2048)
    batches = list(length_sorted_batches(lengths, batch_size, budget))
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))  # every index exactly once
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first, throughout
    for batch in batches:
        assert 1 <= len(batch) <= batch_size
        assert len(batch) * lengths[batch[0]] <= budget or len(batch) == 1
    # greedy: a batch is cut only when the next text would break a limit
    for batch in batches[:-1]:
        assert len(batch) == batch_size or (len(batch) + 1) * lengths[batch[0]] > budget


@pytest.mark.parametrize(
    "batch_size, max_batch_tokens, message",
    [(0, None, "batch_size"), (0, 100, "batch_size"), (8, 0, "max_batch_tokens"), (8, -5, "max_batch_tokens")],
)
def test_length_sorted_batches_rejects_zero(batch_size, max_batch_tokens, message):
    with pytest.raises(ValueError, match=message):
        list(length_sorted_batches([3, 2], batch_size, max_batch_tokens))


# --------------------------------------------------------------------------- token budget on real texts


def test_token_budget_batches_keep_input_order(encoder, texts, fp32_embeddings):
    lengths = [len(e.ids) for e in encoder.tokenizer.encode(texts)[0]]
    budget = 600  # 4 texts of 140 tokens a batch, 20 of 30: batches quite unlike the 32-text default
    assert list(length_sorted_batches(lengths, 32, budget)) != list(length_sorted_batches(lengths, 32))

    budgeted = encoder.encode(texts, max_batch_tokens=budget)
    assert np.abs(budgeted - fp32_embeddings).max() <= 1e-6
    # input order, not batch order (which both runs above share): a text embedded on its own gives its row
    by_length = sorted(range(len(texts)), key=lengths.__getitem__)
    rows = [by_length[-1], 0, by_length[0], by_length[-2]]  # the longest and shortest texts, in no sorted order
    alone = np.stack([encoder.encode(texts[i]) for i in rows])
    assert np.abs(budgeted[rows] - alone).max() <= 1e-6
    # encode_tokens puts rows back by its own code; hidden states are unnormalized (|h| up to about 6),
    # so padding that changes the matmul shapes moves them by a few 1e-6, not 1e-6
    subset = texts[:24] + [texts[by_length[-1]]]
    tokens, budgeted_tokens = encoder.encode_tokens(subset), encoder.encode_tokens(subset, max_batch_tokens=120)
    assert [t.shape[0] for t in budgeted_tokens] == lengths[:24] + [lengths[by_length[-1]]]
    assert max(np.abs(a - b).max() for a, b in zip(tokens, budgeted_tokens)) <= 1e-5
    with pytest.raises(ValueError, match="max_batch_tokens"):
        encoder.encode(texts[:2], max_batch_tokens=0)


def recording(encoder: SentenceEncoder) -> tuple[SentenceEncoder, list[tuple[int, int]]]:
    """A copy of `encoder` whose runner records the (B, T) of every call."""
    calls: list[tuple[int, int]] = []

    class Recorder(torch.nn.Module):
        def forward(self, input_ids, attention_mask, token_type_ids=None):
            calls.append(tuple(input_ids.shape))
            return encoder.runner(input_ids, attention_mask, token_type_ids)

    return with_runner(encoder, Recorder(), encoder.dtype), calls


def test_default_batching_is_the_dtype_token_budget_on_a_cpu():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    for dtype, tokens in CPU_BATCH_TOKENS.items():
        assert default_batching(dtype, cpu) == (DEFAULT_BATCH_TEXTS, tokens)
        assert default_batching(dtype, gpu) == (32, None)  # sentence-transformers' default, no budget


def test_encode_without_batch_arguments_runs_the_budgeted_batches(encoder, texts, fp32_embeddings):
    lengths = [len(e.ids) for e in encoder.tokenizer.encode(texts)[0]]
    budget = CPU_BATCH_TOKENS["float32"]
    assert encoder.batching() == (DEFAULT_BATCH_TEXTS, budget)
    expected = [
        (len(b), max(lengths[i] for i in b)) for b in length_sorted_batches(lengths, DEFAULT_BATCH_TEXTS, budget)
    ]
    assert len(expected) < len(texts) / 32  # short texts share batches bigger than the old 32
    for arguments in ({}, {"batch_size": 1024}):  # a batch size alone keeps the budget
        recorder, calls = recording(encoder)
        vectors = recorder.encode(texts, **arguments)
        assert calls == expected
        assert all(b * t <= budget for b, t in calls)  # no text here is over the budget on its own
        assert np.abs(vectors - fp32_embeddings).max() <= 1e-6
    recorder, calls = recording(encoder)
    recorder.encode(texts, batch_size=7, max_batch_tokens=10**6)  # both given: both are kept
    assert [b for b, _ in calls] == [7] * (len(texts) // 7) + [len(texts) % 7]


# --------------------------------------------------------------------------- right_pad


def test_right_pad_token_ids_by_hand():
    padded, mask = right_pad([[101, 7592, 102], [101, 102], [101, 2088, 2003, 102]])
    assert padded.dtype == torch.int64 and mask.dtype == torch.int64
    assert padded.tolist() == [[101, 7592, 102, 0], [101, 102, 0, 0], [101, 2088, 2003, 102]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]


def test_right_pad_honours_the_pad_value_but_not_in_the_mask():
    padded, mask = right_pad([[3, 1], [5], [2, 2, 2]], value=-100)  # -100: the label id the loss ignores
    assert padded.tolist() == [[3, 1, -100], [5, -100, -100], [2, 2, 2]]
    assert mask.tolist() == [[1, 1, 0], [1, 0, 0], [1, 1, 1]]


def test_right_pad_hidden_states_gives_zero_padded_b_t_c():
    rows = [torch.arange(6.0).view(3, 2), torch.tensor([[7.0, 8.0]])]  # (T_i, C) with T = 3, 1 and C = 2
    padded, mask = right_pad(rows)
    assert padded.shape == (2, 3, 2) and padded.dtype == torch.float32
    assert padded.tolist() == [[[0, 1], [2, 3], [4, 5]], [[7, 8], [0, 0], [0, 0]]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert torch.equal(padded[0], rows[0]) and torch.equal(padded[1, :1], rows[1])


def test_right_pad_rows_of_equal_length_get_no_padding():
    padded, mask = right_pad([[4, 5], [6, 7]])
    assert padded.tolist() == [[4, 5], [6, 7]] and mask.tolist() == [[1, 1], [1, 1]]
