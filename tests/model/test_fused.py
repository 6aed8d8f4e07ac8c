"""Fused int8 (`minilm.model.fused.FusedEncoder`) against eager int8, and its fallback when it cannot compile.

Tier 1: the padding gather against PackedIndex.pad (no compile). Then, marked slow because the first
call compiles (inductor, seconds): on a tiny random config the fused encoder gives eager int8's
numbers up to a quantization step, over batches of other shapes, and without a C++ compiler it warns
and runs eager int8 itself (a subprocess with a fresh inductor cache, so that nothing cached hides
the missing compiler). The quality budget on 500 real STS-B sentences is in test_precision.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from minilm.model.fused import FusedEncoder, gather_rows, padded_source
from minilm.model.int8 import int8_encoder, quantized_input_widths
from minilm.model.packed import PackedIndex
from tests.model.test_packed import random_batch, tiny_encoder

from conftest import ROOT


def tiny_int8(seed: int = 0):
    """The tiny random encoder in eager int8, with smoothing vectors that differ per channel."""
    model = tiny_encoder(seed)
    g = torch.Generator().manual_seed(seed)
    smoothing = {name: torch.rand(width, generator=g) + 0.5 for name, width in quantized_input_widths(model).items()}
    return int8_encoder(model, smoothing)


@pytest.mark.parametrize("lengths", [[17, 5, 1, 12], [1], [9, 9, 9]])
def test_padding_gather_equals_packed_index_pad(lengths):
    _, mask, _ = random_batch(lengths)
    index = PackedIndex.from_mask(mask)
    x = torch.randn(index.flat.numel(), 6)
    B, T = mask.shape
    torch.testing.assert_close(gather_rows(x, padded_source(index)).view(B, T, 6), index.pad(x), rtol=0, atol=0)


@pytest.mark.slow
def test_fused_int8_gives_eager_int8_numbers_on_tiny_config():
    eager = tiny_int8()
    fused = FusedEncoder(eager)
    for lengths in ([17, 5, 1, 12], [23, 64, 2, 64, 7, 1], [9, 9, 9]):  # other N and B * T: no new compile needed
        ids, mask, types = random_batch(lengths)
        with torch.inference_mode():
            expected, got = eager(ids, mask, types), fused(ids, mask, types)
        assert fused.fallback_note is None, fused.fallback_note
        assert bool((got[mask == 0] == 0).all())  # padding rows stay zero
        real = mask.bool()
        # one value rounded to the neighbouring int8 step moves a LayerNorm output by ~1e-2 at most here
        torch.testing.assert_close(got[real], expected[real], rtol=0, atol=0.05)
        assert (got[real] - expected[real]).abs().mean() < 2e-3


FALLBACK_SCRIPT = """
import warnings, torch
from tests.model.test_fused import tiny_int8
from tests.model.test_packed import random_batch
from minilm.model.fused import FusedEncoder
eager = tiny_int8()
fused = FusedEncoder(eager)
ids, mask, types = random_batch([17, 5, 1, 12])
with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
    warnings.simplefilter("always")
    got, again, expected = fused(ids, mask, types), fused(ids, mask, types), eager(ids, mask, types)
notes = [str(w.message) for w in caught if w.category is RuntimeWarning]
print(len(notes), notes[0] == fused.fallback_note if notes else None, fused.fallback_note)
print(torch.equal(got, expected) and torch.equal(again, expected))
"""


@pytest.mark.slow
def test_without_a_cpp_compiler_fused_int8_warns_once_and_runs_eager_int8(tmp_path):
    env = {
        **os.environ,
        "CXX": str(tmp_path / "no-such-c++"),  # the compiler inductor looks for
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),  # empty: nothing compiled earlier can stand in
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
    }
    done = subprocess.run(
        [sys.executable, "-c", FALLBACK_SCRIPT], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    warned, same = done.stdout.strip().splitlines()[-2:]
    assert warned.startswith("1 True fused int8 could not be compiled (InvalidCxxCompiler: ")
    assert warned.endswith("); running eager int8 instead")
    assert same == "True"  # the fallback is eager int8 itself, bit for bit
