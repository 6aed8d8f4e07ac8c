"""Reduced precision against float32: which dtype runs where (`resolve_dtype`), and how close it comes.

`resolve_dtype` is checked with the CPU flags patched, so every branch runs on any machine. The real
weights then run the 200 real texts of conftest's `texts` and hold bfloat16 and float16 to a cosine
of at least 0.999 per sentence against float32.

This CPU emulates half precision, so `SentenceEncoder` would fall back to float32; the half tests
build the half-precision runner themselves to force it. Emulation is slow, hence only 200 texts.
On CUDA, `from_pretrained` keeps the dtype and the same bound is checked on the GPU.

The quality budget of every mode (docs/performance.md) is checked on 500 real STS-B test
sentences: a minimum cosine to float32 per sentence, and the STS-B Spearman of their 250 pairs
within 0.15 (x 100) of float32's.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from minilm import SentenceEncoder
from minilm.model.packed import PackedEncoder
from minilm.model.precision import inference_model, resolve_dtype

from conftest import needs_cuda, read_stsb, with_runner

HALF_MIN_COSINE = 0.999
MIN_COSINE = {"bfloat16": HALF_MIN_COSINE, "float16": HALF_MIN_COSINE, "int8": 0.99}  # the quality budget
MAX_SPEARMAN_LOSS = 0.15  # STS-B Spearman x 100, against float32 on the same pairs


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


@pytest.mark.slow
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


def test_from_pretrained_bfloat16_falls_back_to_float32_with_a_warning(monkeypatch, checkpoint_dir, encoder, texts):
    monkeypatch.setattr("minilm.model.precision.cpu_flags", frozenset)  # a CPU without bfloat16, whatever this one has
    with pytest.warns(RuntimeWarning, match="bfloat16 needs a CPU with"):
        fallback = SentenceEncoder.from_pretrained(str(checkpoint_dir), dtype="bfloat16")
    assert fallback.dtype == "float32" and fallback.precision_note.startswith("bfloat16 needs a CPU with")
    assert fallback.runner is fallback.model and next(fallback.model.parameters()).dtype == torch.float32
    np.testing.assert_array_equal(fallback.encode(texts[:20]), encoder.encode(texts[:20]))  # same batches, same bits


# --------------------------------------------------------------------------- the quality budget, 500 sentences


@pytest.fixture(scope="module")
def stsb_pairs(encoder) -> tuple[list[float], list[str], np.ndarray]:
    """The first 250 STS-B test pairs: (gold scores, their 500 sentences, float32 embeddings of them)."""
    scores, first, second = read_stsb("test")
    sentences = first[:250] + second[:250]
    return scores[:250], sentences, encoder.encode(sentences)


def spearman(scores: list[float], vectors: np.ndarray) -> float:
    from scipy.stats import spearmanr

    half = len(scores)
    return 100 * float(spearmanr(scores, (vectors[:half] * vectors[half:]).sum(axis=1)).statistic)


@pytest.mark.slow
@pytest.mark.parametrize(
    "dtype, fuse_int8",
    [("bfloat16", False), ("float16", False), ("int8", False), ("int8", True)],
    ids=["bfloat16", "float16", "int8", "int8-fused"],
)
def test_every_mode_keeps_the_quality_budget_on_500_stsb_sentences(encoder, stsb_pairs, dtype, fuse_int8):
    scores, sentences, exact = stsb_pairs
    smoothing = None
    if dtype == "int8":
        from minilm.weights.int8_scales import load_int8_scales

        smoothing = load_int8_scales(encoder.checkpoint)
    # forced even where this CPU would fall back (then it is emulated: slower, the same numbers)
    runner = inference_model(copy.deepcopy(encoder.model), dtype, smoothing, fuse_int8=fuse_int8)
    vectors = with_runner(encoder, runner, dtype).encode(sentences)
    cosine = (vectors * exact).sum(axis=1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(exact, axis=1))
    assert cosine.min() >= MIN_COSINE[dtype], f"{dtype}: worst {sentences[int(cosine.argmin())][:60]!r}"
    assert abs(spearman(scores, vectors) - spearman(scores, exact)) <= MAX_SPEARMAN_LOSS
    assert np.abs(vectors - exact).max() > 1e-5  # it really ran in reduced precision
    assert getattr(runner, "fallback_note", None) is None, runner.fallback_note  # fused int8 ran compiled
