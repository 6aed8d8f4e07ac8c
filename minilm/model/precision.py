"""Precision modes for inference: which dtype actually runs, and the model prepared for it.

float32 is the default and the parity path: the plain `BertModel`, the same numbers as
sentence-transformers. bfloat16 and float16 hold the weights in half precision (cast once, not
re-cast by autocast on every call) and run the padding-free `PackedEncoder`; pooling still sums
in float32.

Half precision only pays where the hardware multiplies it natively: any CUDA GPU, or a CPU with
AMX or AVX512-BF16 (bfloat16) / AMX-FP16 or AVX512-FP16 (float16). Elsewhere PyTorch emulates
it and runs several times *slower* than float32, so `resolve_dtype` falls back to float32 and
says so instead.
"""

from __future__ import annotations

import functools
import platform
from typing import Literal

import torch

from .encoder import BertModel
from .packed import PackedEncoder

ComputeDtype = Literal["float32", "bfloat16", "float16"]  # what the matmuls run in; the stored form is StoredPrecision
COMPUTE_DTYPES: tuple[ComputeDtype, ...] = ("float32", "bfloat16", "float16")
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# /proc/cpuinfo flags that give native half-precision matmuls on x86 CPUs
CPU_HALF_FLAGS = {"bfloat16": ("amx_bf16", "avx512_bf16"), "float16": ("amx_fp16", "avx512_fp16")}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty elsewhere: then half precision is not assumed fast)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def resolve_dtype(dtype: str, device: torch.device) -> tuple[str, str | None]:
    """(the dtype that will run, a one-line note when it differs from the one asked for).

    Raises ValueError for a name that is not a supported dtype.
    """
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; choose one of {', '.join(COMPUTE_DTYPES)}")
    if dtype == "float32" or device.type != "cpu":
        return dtype, None
    flags = CPU_HALF_FLAGS[dtype]
    if platform.machine().lower() in ("x86_64", "amd64") and cpu_flags() & set(flags):
        return dtype, None
    note = (
        f"{dtype} needs a CPU with {' or '.join(f.upper() for f in flags)} to be fast, and this one has neither; "
        f"running float32 instead (emulated {dtype} would be several times slower)"
    )
    return "float32", note


def inference_model(model: BertModel, dtype: str) -> torch.nn.Module:
    """The module `SentenceEncoder` runs for `dtype` (already resolved). Same call signature as BertModel.

    float32 returns `model` itself. Half precision casts `model`'s weights in place (they are
    shared with the packed twin it returns) so the float32 copy does not stay in memory.
    """
    if dtype == "float32":
        return model
    half = TORCH_DTYPES[dtype]
    return PackedEncoder(model.to(half)).to(half).eval()  # the second cast covers the new fused QKV weights
