"""The packed fast path against the exact one: `PackedEncoder` and `packed_attention`.

Tier 1 compares `PackedEncoder` and `packed_attention` with the plain encoder and
`reference_attention` on a tiny random config (milliseconds, no weights); on CUDA it also holds the
Flash Attention kernel on packed half-precision tokens to the float32 oracle. Tier 2 runs the real
weights on 200 real texts (conftest's `texts`: STS-B test sentences plus the six longest CoNLL-2003
test sentences, news text of about 60 to 140 tokens) and holds packed attention in float32 to
max |Δ| <= 1e-6 against the padded encoder, on hidden states of real tokens and on embeddings.

Half precision is tests/model/test_precision.py; token-budget batches are tests/text/test_batching.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minilm.model.encoder import BertModel, reference_attention
from minilm.model.loading import bert_config
from minilm.model.packed import PackedEncoder, PackedIndex, packed_attention

from conftest import TINY, needs_cuda, with_runner

PACKED_ATOL = 1e-6


# --------------------------------------------------------------------------- tier 1: tiny random config


def tiny_encoder(seed: int = 0) -> BertModel:
    """Our encoder with random weights, LayerNorms and biases included, in eval mode."""
    torch.manual_seed(seed)
    model = BertModel(bert_config({**TINY, "hidden_act": "gelu", "layer_norm_eps": 1e-12}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # a packed path that skipped a bias or a norm would show
    return model.eval()


def random_batch(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids, mask and random token types for texts of the given lengths."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    mask = (torch.arange(T) < torch.tensor(lengths).unsqueeze(1)).long()  # (B, T)
    ids = torch.randint(1, TINY["vocab_size"], (len(lengths), T), generator=g) * mask
    types = torch.randint(0, 2, (len(lengths), T), generator=g) * mask
    return ids, mask, types


@pytest.mark.parametrize(
    "lengths",
    [[17, 5, 1, 12], [1], [1, 1, 1], [9, 9, 9, 9], [1, 40, 3], [23, 64, 2, 64, 7, 1]],
    ids=["mixed", "one-token", "all-length-1", "all-same-length", "1-40-3", "up-to-max-positions"],
)
def test_packed_encoder_matches_padded_encoder_on_tiny_config(lengths):
    model = tiny_encoder()
    packed = PackedEncoder(model).eval()
    ids, mask, types = random_batch(lengths)
    with torch.no_grad():
        expected = model(ids, mask, types)  # (B, T, C)
        actual = packed(ids, mask, types)  # (B, T, C)
    real = mask.bool()
    assert actual.shape == expected.shape
    assert (actual[real] - expected[real]).abs().max().item() <= PACKED_ATOL
    assert actual[~real].abs().sum().item() == 0.0  # padding rows come back as zeros


def test_tiny_packed_tolerance_discriminates_and_types_are_used():
    """1e-6 is tight enough to catch attending to padding, or dropping the token types."""
    model = tiny_encoder()
    packed = PackedEncoder(model).eval()
    ids, mask, types = random_batch([17, 5, 1, 12])
    real = mask.bool()
    with torch.no_grad():
        good = packed(ids, mask, types)[real]
        leaky = model(ids, torch.ones_like(mask), types)[real]  # every query also sees the padding keys
        untyped = packed(ids, mask)[real]
    assert (good - leaky).abs().max().item() > 1e-3
    assert (good - untyped).abs().max().item() > 1e-3


def test_packed_index_positions_and_offsets_by_hand():
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]])  # lengths 3, 1, 2
    index = PackedIndex.from_mask(mask)
    assert index.flat.tolist() == [0, 1, 2, 3, 6, 7]  # positions in the flattened (3 * 3) batch
    assert index.cu_seqlens.tolist() == [0, 3, 4, 6] and index.cu_seqlens.dtype == torch.int32
    assert (index.batch, index.max_len) == (3, 3)
    rows = torch.arange(6.0).unsqueeze(1)  # (N, 1): packed row i holds the value i
    assert index.pad(rows).squeeze(-1).tolist() == [[0, 1, 2], [3, 0, 0], [4, 5, 0]]
    assert torch.equal(index.unpad(index.pad(rows)), rows)


def pad_by_hand(x: torch.Tensor, lengths: list[int], H: int) -> torch.Tensor:
    """(N, C) packed rows -> (B, H, T, D) zero-padded, one text at a time (independent of PackedIndex)."""
    B, T, C = len(lengths), max(lengths), x.size(1)
    out = x.new_zeros(B, T, C)
    start = 0
    for b, n in enumerate(lengths):
        out[b, :n] = x[start : start + n]
        start += n
    return out.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, D)


@pytest.mark.parametrize("lengths", [[7, 1, 4], [1], [5, 5, 5]], ids=["mixed", "one-token", "same-length"])
def test_packed_attention_matches_reference_attention(lengths):
    H, C = 4, 32
    N = sum(lengths)
    qkv = torch.randn(N, 3 * C, generator=torch.Generator().manual_seed(0))  # (N, 3C): query, key, value
    mask = (torch.arange(max(lengths)) < torch.tensor(lengths).unsqueeze(1)).long()  # (B, T)
    index = PackedIndex.from_mask(mask)
    actual = packed_attention(qkv, index, H)  # (N, C)

    q, k, v = (pad_by_hand(part, lengths, H) for part in qkv.split(C, dim=1))  # each (B, H, T, D)
    key_mask = mask.bool().view(len(lengths), 1, 1, -1)  # (B, 1, 1, T)
    y = reference_attention(q, k, v, key_mask).transpose(1, 2).reshape(len(lengths), -1, C)  # (B, T, C)
    expected = torch.cat([y[b, :n] for b, n in enumerate(lengths)])  # (N, C)
    assert actual.shape == (N, C)
    assert (actual - expected).abs().max().item() <= 1e-6


@needs_cuda
@pytest.mark.parametrize("dtype, tolerance", [(torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
def test_flash_varlen_packed_attention_matches_reference_on_cuda(dtype, tolerance):
    """The CUDA half-precision branch (Flash Attention on packed tokens) against the float32 oracle.

    The oracle gets the same half-rounded inputs, so only the kernel's own error is measured: about
    two units in the last place of outputs that reach |y| ~ 3 (bf16 keeps 8 bits, fp16 11).
    """
    H, C, lengths = 12, 384, [37, 1, 64, 5, 64, 1]  # all-MiniLM-L6-v2's heads: D = 32
    qkv = torch.randn(sum(lengths), 3 * C, generator=torch.Generator().manual_seed(0)).to("cuda", dtype)  # (N, 3C)
    mask = (torch.arange(max(lengths)) < torch.tensor(lengths).unsqueeze(1)).long()  # (B, T)
    actual = packed_attention(qkv, PackedIndex.from_mask(mask.cuda()), H).float().cpu()  # (N, C)

    q, k, v = (pad_by_hand(part, lengths, H) for part in qkv.float().cpu().split(C, dim=1))  # each (B, H, T, D)
    y = (
        reference_attention(q, k, v, mask.bool().view(len(lengths), 1, 1, -1))
        .transpose(1, 2)
        .reshape(len(lengths), -1, C)
    )
    expected = torch.cat([y[b, :n] for b, n in enumerate(lengths)])  # (N, C)
    assert ((actual - expected).abs() / (1 + expected.abs())).max().item() <= tolerance


def test_packed_attention_keeps_texts_apart():
    """Changing the second text's keys and values leaves the first text's output alone."""
    H, C, lengths = 4, 32, [6, 3]
    qkv = torch.randn(9, 3 * C, generator=torch.Generator().manual_seed(0))
    index = PackedIndex.from_mask((torch.arange(6) < torch.tensor(lengths).unsqueeze(1)).long())
    changed = qkv.clone()
    changed[6:, C:] += 10.0  # keys and values of the second text
    before, after = packed_attention(qkv, index, H), packed_attention(changed, index, H)
    assert torch.equal(before[:6], after[:6])
    assert (before[6:] - after[6:]).abs().max().item() > 1e-2


# --------------------------------------------------------------------------- tier 2: real weights, real texts


def test_packed_encoder_matches_padded_encoder_on_real_texts(encoder, texts, fp32_embeddings):
    packed_model = PackedEncoder(encoder.model).eval()
    # hidden states: one padded batch of short and long texts in input order, so mostly padding
    batch = encoder.tokenizer.pad(encoder.tokenizer.encode(texts[:16] + [t for t in texts[16:] if len(t) > 300])[0])
    real = batch.attention_mask.bool()
    assert batch.input_ids.size(1) > 100 and real.float().mean() < 0.5
    with torch.inference_mode():
        expected = encoder.model(batch.input_ids, batch.attention_mask, batch.token_type_ids)  # (B, T, C)
        actual = packed_model(batch.input_ids, batch.attention_mask, batch.token_type_ids)  # (B, T, C)
    assert (actual[real] - expected[real]).abs().max().item() <= PACKED_ATOL
    # sentence embeddings: all 200 texts through the whole pipeline
    packed = with_runner(encoder, packed_model, "float32")
    assert np.abs(packed.encode(texts) - fp32_embeddings).max() <= PACKED_ATOL
