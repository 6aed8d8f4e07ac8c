"""The machine a benchmark ran on, printed beside every table: the CPU's model and the flags that decide
which precisions run natively, the GEMM peaks (the roofline every throughput is read against), and
the encoder's matmul FLOPs per token. Shared by speed.py and the other benchmarks.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minilm.model.precision import cpu_flags, resolve_dtype

GEMM_SHAPE = (4096, 384, 1536)  # tokens x hidden x feed-forward: the encoder's biggest matmul
# the /proc/cpuinfo flags that decide which precisions run natively (see minilm.model.precision)
RELEVANT_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
    "avx512_fp16",
    "amx_fp16",
)


def flops_per_token(hidden: int = 384, ffn: int = 1536, layers: int = 6) -> float:
    """Matmul FLOPs per token: Q, K, V and the output projection (4 C^2) plus the feed-forward (2 C F),
    x2 for multiply-add."""
    return 2.0 * layers * (4 * hidden * hidden + 2 * hidden * ffn)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def gemm_peak(dtype: torch.dtype, repeats: int = 20, budget_s: float = 2.0) -> float:
    """G(FL)OP/s of one (4096 x 384) @ (384 x 1536) matmul in `dtype`: the best of `repeats` calls after a
    warm-up, or of those that fit in `budget_s`. Where a dtype is emulated (bf16 without AVX512-BF16 or
    AMX runs at about 1 GFLOP/s, 5 s a call) twenty calls would take minutes, and the warm-up call alone
    tells it: then it is the one timed.

    int8 multiplies with torch._int_mm (int8 x int8 -> int32), the kernel our int8 mode runs.
    """
    m, k, n = GEMM_SHAPE
    if dtype == torch.int8:
        a, b = torch.randint(-127, 128, (m, k), dtype=torch.int8), torch.randint(-127, 128, (k, n), dtype=torch.int8)
        matmul = torch._int_mm
    else:
        a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
        matmul = torch.matmul
    seconds: list[float] = []  # the first call is the warm-up
    while not seconds or (len(seconds) <= repeats and sum(seconds) < budget_s):
        start = time.perf_counter()
        matmul(a, b)
        seconds.append(time.perf_counter() - start)
    return 2 * m * k * n / min(seconds[1:] or seconds) / 1e9


def native(dtype: str) -> bool:
    """Whether `dtype` runs natively here (else our encoder falls back to float32)."""
    return resolve_dtype(dtype, torch.device("cpu"))[1] is None


def machine(peaks: dict[str, float]) -> dict:
    """What the numbers depend on: the CPU, its flags, torch's threads and version, the GEMM peaks."""
    return {
        "cpu": cpu_model(),
        "cpu_flags": [flag for flag in RELEVANT_FLAGS if flag in cpu_flags()],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gemm_peak_gflops": peaks,
    }
