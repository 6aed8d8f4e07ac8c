"""Precision modes for inference: which dtype actually runs, and the model prepared for it.

float32 is the default and the parity path: the plain `BertModel`, the same numbers as
sentence-transformers. bfloat16 and float16 hold the weights in half precision (cast once, not
re-cast by autocast on every call) and run the padding-free `PackedEncoder`; pooling still sums
in float32. int8 runs the packed encoder with its Linear layers in 8-bit integers
(minilm.model.int8), from smoothing scales calibrated for the checkpoint. "auto" picks the
fastest of these that keeps the quality budget on this machine (`choose_auto`).

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
from .fused import FusedEncoder
from .int8 import int8_encoder
from .packed import PackedEncoder

# what the matmuls run in; the stored form of shard vectors is StoredPrecision
ComputeDtype = Literal["float32", "bfloat16", "float16", "int8"]
COMPUTE_DTYPES: tuple[ComputeDtype, ...] = ("float32", "bfloat16", "float16", "int8")
DTYPE_CHOICES = (*COMPUTE_DTYPES, "auto")  # what from_pretrained(dtype=) and --dtype accept
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# /proc/cpuinfo flags that give native matmuls in each reduced precision on x86 CPUs
CPU_FAST_FLAGS = {
    "bfloat16": ("amx_bf16", "avx512_bf16"),
    "float16": ("amx_fp16", "avx512_fp16"),
    "int8": ("amx_int8", "avx512_vnni", "avx_vnni"),
}


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


def native_on_cpu(dtype: str) -> str | None:
    """The CPU flag that makes `dtype` fast here, or None (then it would be emulated)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    return next((flag for flag in CPU_FAST_FLAGS[dtype] if flag in cpu_flags()), None)


def choose_auto(device: torch.device, int8_calibrated: bool) -> tuple[ComputeDtype, str]:
    """dtype="auto": (the fastest mode inside the quality budget here, one line saying why).

    On a CPU: int8 where VNNI or AMX-INT8 exists and the checkpoint has int8 scales, else
    bfloat16 where it is native, else float32. On CUDA bfloat16, on MPS float16.
    """
    if device.type == "cuda":
        return "bfloat16", "auto: bfloat16 (CUDA)"
    if device.type == "mps":
        return "float16", "auto: float16 (MPS)"
    if flag := native_on_cpu("int8"):
        if int8_calibrated:
            return "int8", f"auto: int8 (this CPU has {flag.upper()}; the checkpoint has int8 scales)"
        skipped = "; int8 skipped: this checkpoint has no int8 scales (python -m minilm.calibrate makes them)"
    else:
        skipped = ""
    if flag := native_on_cpu("bfloat16"):
        return "bfloat16", f"auto: bfloat16 (this CPU has {flag.upper()}){skipped}"
    return "float32", f"auto: float32 (this CPU has no VNNI/AMX-INT8 or AVX512-BF16/AMX-BF16){skipped}"


def resolve_dtype(dtype: str, device: torch.device) -> tuple[str, str | None]:
    """(the dtype that will run, a one-line note when it differs from the one asked for).

    Raises ValueError for a name that is not a supported dtype ("auto" is resolved before, by choose_auto).
    """
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; choose one of {', '.join(DTYPE_CHOICES)}")
    if dtype == "int8" and device.type != "cpu":
        raise ValueError(f"dtype 'int8' runs on the CPU only; on {device.type} use bfloat16 or float16")
    if dtype == "float32" or device.type != "cpu" or native_on_cpu(dtype):
        return dtype, None
    flags = CPU_FAST_FLAGS[dtype]
    note = (
        f"{dtype} needs a CPU with {' or '.join(f.upper() for f in flags)} to be fast, and this one has none; "
        f"running float32 instead (emulated {dtype} would be several times slower)"
    )
    return "float32", note


def inference_model(
    model: BertModel, dtype: str, int8_smoothing: dict[str, torch.Tensor] | None = None, fuse_int8: bool = False
) -> torch.nn.Module:
    """The module `SentenceEncoder` runs for `dtype` (already resolved). Same call signature as BertModel.

    float32 returns `model` itself. Half precision casts `model`'s weights in place (they are
    shared with the packed twin it returns) so the float32 copy does not stay in memory; int8
    swaps its Linear layers in place for the same reason (minilm.model.int8.int8_encoder), from
    `int8_smoothing`, the checkpoint's calibrated scales.
    fuse_int8: when dtype is int8, run it as minilm.model.fused.FusedEncoder (its element-wise steps
    compiled between the matmuls: faster, after a compile on the first batch); no effect on other dtypes.
    """
    if dtype == "float32":
        return model
    if dtype == "int8":
        if int8_smoothing is None:
            raise ValueError("dtype 'int8' needs the checkpoint's int8 smoothing scales (python -m minilm.calibrate)")
        packed = int8_encoder(model, int8_smoothing)
        return FusedEncoder(packed) if fuse_int8 else packed
    half = TORCH_DTYPES[dtype]
    return PackedEncoder(model.to(half)).to(half).eval()  # the second cast covers the new fused QKV weights
