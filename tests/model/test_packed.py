"""The fast paths against the exact one: packed tokens, half precision and token-budget batches.

Tier 1 compares `PackedEncoder` and `packed_attention` with the plain encoder and
`reference_attention` on a tiny random config (milliseconds, no weights). Tier 2 runs the real
weights on 200 real texts (STS-B test sentences plus the six longest CoNLL-2003 test sentences,
news text of about 60 to 140 tokens) and holds every mode to its stated tolerance against float32:

    packed attention, float32    max |Δ| <= 1e-6 (hidden states on real tokens and embeddings)
    bfloat16, float16            cosine >= 0.999 per sentence
    max_batch_tokens             max |Δ| <= 1e-6, results in input order

This CPU emulates half precision, so `SentenceEncoder` would fall back to float32; the half tests
build the half-precision runner themselves to force it. Emulation is slow, hence only 200 texts.
"""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from minilm import SentenceEncoder
from minilm.embed import main as embed_main
from minilm.model.encoder import BertModel, reference_attention
from minilm.model.loading import bert_config
from minilm.model.packed import PackedEncoder, PackedIndex, packed_attention
from minilm.model.precision import inference_model, resolve_dtype
from minilm.text.tokenization import length_sorted_batches

from conftest import ROOT, require_data

TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    type_vocab_size=2,
)
N_TEXTS = 200
PACKED_ATOL = 1e-6
HALF_MIN_COSINE = 0.999
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="the Flash Attention path runs only on CUDA")


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


# --------------------------------------------------------------------------- token budget batching


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


# --------------------------------------------------------------------------- precision resolution


def test_resolve_dtype_falls_back_without_cpu_flags(monkeypatch):
    monkeypatch.setattr("minilm.model.precision.cpu_flags", lambda: frozenset({"sse4_2", "avx2", "fma"}))
    for dtype in ("bfloat16", "float16"):
        effective, note = resolve_dtype(dtype, torch.device("cpu"))
        assert effective == "float32"
        assert note.startswith(f"{dtype} needs a CPU with") and "float32" in note and "\n" not in note
    assert resolve_dtype("float32", torch.device("cpu")) == ("float32", None)


@pytest.mark.parametrize(
    "dtype, flags, expected",
    [
        ("bfloat16", {"avx512_bf16"}, "bfloat16"),
        ("bfloat16", {"amx_bf16"}, "bfloat16"),
        ("float16", {"avx512_fp16"}, "float16"),
        ("float16", {"amx_fp16"}, "float16"),
        ("float16", {"avx512_bf16", "amx_bf16"}, "float32"),  # bfloat16 support does not make float16 fast
        ("bfloat16", {"avx512_fp16", "avx512f"}, "float32"),
    ],
)
def test_resolve_dtype_keeps_half_with_the_cpu_flags(monkeypatch, dtype, flags, expected):
    monkeypatch.setattr("minilm.model.precision.platform.machine", lambda: "x86_64")  # the flags are x86 flag names
    monkeypatch.setattr("minilm.model.precision.cpu_flags", lambda: frozenset(flags))
    effective, note = resolve_dtype(dtype, torch.device("cpu"))
    assert effective == expected
    assert (note is None) == (expected == dtype)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_resolve_dtype_on_cuda_keeps_the_dtype_without_reading_cpu_flags(monkeypatch, dtype):
    def no_flags():
        raise AssertionError("cpu_flags must not be consulted for a CUDA device")

    monkeypatch.setattr("minilm.model.precision.cpu_flags", no_flags)
    assert resolve_dtype(dtype, torch.device("cuda")) == (dtype, None)
    assert resolve_dtype(dtype, torch.device("cuda", 1)) == (dtype, None)


@pytest.mark.parametrize("dtype", ["int4", "fp16", "Float32", ""])
def test_resolve_dtype_rejects_unknown_names(dtype):
    with pytest.raises(ValueError, match="choose one of float32, bfloat16, float16") as error:
        resolve_dtype(dtype, torch.device("cpu"))
    assert repr(dtype) in str(error.value)


# --------------------------------------------------------------------------- tier 2: real weights, real texts


@pytest.fixture(scope="module")
def texts(stsb_sentences, encoder) -> list[str]:
    """200 real texts: STS-B test sentences and the 6 longest CoNLL-2003 test sentences, shuffled so
    input order is not length order. (Nothing near the 256-token limit: one such text pads its whole
    32-text float32 batch to 256 and triples the time of every full pass here.)"""
    from heads.data import read_conll

    news = [" ".join(example.words) for example in read_conll(require_data("conll2003/test.txt"))]
    chosen = stsb_sentences[: N_TEXTS - 6] + sorted(news, key=len)[-6:]
    _, n_tokens = encoder.tokenizer.encode(chosen)
    assert len(set(chosen)) == N_TEXTS and max(n_tokens) > 100 and sorted(n_tokens)[N_TEXTS // 2] < 20
    random.Random(0).shuffle(chosen)
    return chosen


@pytest.fixture(scope="module")
def fp32_embeddings(encoder, texts) -> np.ndarray:
    return encoder.encode(texts)


def with_runner(encoder: SentenceEncoder, runner: torch.nn.Module, dtype: str) -> SentenceEncoder:
    """A copy of `encoder` that runs `runner`: how the tests force a mode this CPU would not pick."""
    forced = copy.copy(encoder)
    forced.runner, forced.dtype, forced.precision_note = runner, dtype, None
    return forced


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


@pytest.mark.parametrize("dtype, torch_dtype", [("bfloat16", torch.bfloat16), ("float16", torch.float16)])
def test_half_precision_matches_float32_by_cosine(encoder, texts, fp32_embeddings, dtype, torch_dtype):
    runner = inference_model(copy.deepcopy(encoder.model), dtype)
    assert isinstance(runner, PackedEncoder)
    assert {p.dtype for p in runner.parameters()} == {torch_dtype}  # the fused QKV weights included
    assert next(encoder.model.parameters()).dtype == torch.float32  # the shared encoder was not cast

    half = with_runner(encoder, runner, dtype).encode(texts)
    assert half.dtype == np.float32 and half.shape == fp32_embeddings.shape
    cosine = (half * fp32_embeddings).sum(axis=1) / (
        np.linalg.norm(half, axis=1) * np.linalg.norm(fp32_embeddings, axis=1)
    )
    assert cosine.min() >= HALF_MIN_COSINE, f"{dtype}: worst text {texts[int(cosine.argmin())][:60]!r}"
    assert np.abs(half - fp32_embeddings).max() > 1e-6  # it really ran in half precision


@needs_cuda
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cuda_half_precision_matches_cpu_float32_by_cosine(checkpoint_dir, texts, fp32_embeddings, dtype):
    """The real thing on a GPU: from_pretrained keeps the dtype and runs Flash Attention on packed tokens."""
    gpu = SentenceEncoder.from_pretrained(str(checkpoint_dir), device="cuda", dtype=dtype)
    assert gpu.dtype == dtype and gpu.precision_note is None and isinstance(gpu.runner, PackedEncoder)
    half = gpu.encode(texts)
    cosine = (half * fp32_embeddings).sum(axis=1) / (
        np.linalg.norm(half, axis=1) * np.linalg.norm(fp32_embeddings, axis=1)
    )
    assert cosine.min() >= HALF_MIN_COSINE, f"{dtype}: worst text {texts[int(cosine.argmin())][:60]!r}"


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


def test_from_pretrained_bfloat16_falls_back_to_float32_with_a_warning(monkeypatch, checkpoint_dir, encoder, texts):
    monkeypatch.setattr("minilm.model.precision.cpu_flags", frozenset)  # a CPU without bfloat16, whatever this one has
    with pytest.warns(RuntimeWarning, match="bfloat16 needs a CPU with"):
        fallback = SentenceEncoder.from_pretrained(str(checkpoint_dir), dtype="bfloat16")
    assert fallback.dtype == "float32" and fallback.precision_note.startswith("bfloat16 needs a CPU with")
    assert fallback.runner is fallback.model and next(fallback.model.parameters()).dtype == torch.float32
    np.testing.assert_array_equal(fallback.encode(texts[:20]), encoder.encode(texts[:20]))  # same batches, same bits


# --------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_bfloat16_prints_one_note_and_float32_embeddings(encoder):
    sentences = ["A man is playing a guitar.", "The stock market fell today."]
    # the CLI in a subprocess that sees a CPU without bfloat16, whatever this one has
    without_bf16 = "import sys, minilm.model.precision, minilm.embed; minilm.model.precision.cpu_flags = frozenset; sys.exit(minilm.embed.main())"
    command = [sys.executable, "-c", without_bf16, "--dtype", "bfloat16", "--format", "jsonl", *sentences]
    result = subprocess.run(command, capture_output=True, cwd=ROOT, timeout=300)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert stderr.startswith("note: bfloat16 needs a CPU with") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [r["text"] for r in records] == sentences
    assert np.abs(np.array([r["embedding"] for r in records]) - encoder.encode(sentences)).max() <= 1e-6


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--dtype", "int4"],
            "argument --dtype: invalid choice: 'int4' (choose from 'float32', 'bfloat16', 'float16')",
        ),
        (["--max-batch-tokens", "0"], "argument --max-batch-tokens: must be at least 1, got 0"),
    ],
)
def test_cli_usage_errors_exit_2(capsys, args, message):
    """argparse rejects these before any model work; `main` is what `python -m minilm.embed` runs
    (test_cli.py checks user errors through the subprocess), so this runs in-process to save 2 s each."""
    with pytest.raises(SystemExit) as exit_info:
        embed_main([*args, "Some text."])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {message}; see python -m minilm.embed --help\n"
