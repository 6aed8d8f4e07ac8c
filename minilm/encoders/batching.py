"""How texts are cut into encoder calls: longest first, a count and a token budget per call, a progress bar.

Throughput on a CPU rises with the batch while per-call costs (Python, op dispatch, the attention's
padding) are shared by more texts, and falls again once one call's activations no longer fit in
the caches: every elementwise pass (GELU, LayerNorm, int8's quantize) then goes to memory. What
sets that limit is the number of tokens in a call, not the number of texts: 512 short STS-B texts
(about 14 tokens each, 7,000 padded tokens) ran int8 at 574 sent/s where 128 ran at 1,015. So the
default batch is a token budget, measured per compute dtype (`CPU_BATCH_TOKENS`,
benchmarks/batch_sweep.py), with a cap on the count (`DEFAULT_BATCH_TEXTS`) for very short texts.

`batch_size` and `max_batch_tokens`, where given, override either part; a batch_size alone keeps
the dtype's token budget, so no batch size falls off the cliff. On a GPU the defaults stay
sentence-transformers' 32 texts with no budget (bigger batches pay there until memory runs out;
no GPU was at hand to measure a budget).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from ..text.tokenization import length_sorted_batches

if TYPE_CHECKING:
    import torch

PROGRESS_BAR_MIN_TEXTS = 1000  # auto mode shows a progress bar from this many texts on

# Padded tokens per encoder call on a CPU, by the dtype the matmuls run in: the middle of the flat
# top of benchmarks/batch_sweep.py's curve on short and long texts (2-core AMD EPYC Zen 4: every
# dtype is level, within the machine's noise, from 512 to 4,096 tokens; int8 falls to about half at
# 8,192; docs/performance.md#batch-size-and-token-budget).
CPU_BATCH_TOKENS = {"float32": 1024, "bfloat16": 1024, "float16": 1024, "int8": 2048}
DEFAULT_BATCH_TEXTS = 256  # texts per call at most, where the token budget would allow more
GPU_BATCH_TEXTS = 32  # sentence-transformers' default


def default_batching(dtype: str, device: torch.device) -> tuple[int, int | None]:
    """(texts per call at most, padded tokens per call at most or None) when the caller gives neither."""
    if device.type != "cpu":
        return GPU_BATCH_TEXTS, None
    return DEFAULT_BATCH_TEXTS, CPU_BATCH_TOKENS[dtype]


def batches_with_progress(
    lengths: Sequence[int],
    batch_size: int,
    max_batch_tokens: int | None = None,
    *,
    show: bool,
    desc: str,
    unit: str,
) -> Iterator[list[int]]:
    """`length_sorted_batches` of `lengths` (longest first), with a progress bar on stderr that moves on by
    each batch once the caller has run it. The one loop of SentenceEncoder, CrossEncoder and the heads'
    predictor; `show`: usually `show_bar(n, show_progress_bar)`."""
    with tqdm(total=len(lengths), desc=desc, unit=unit, disable=not show, file=sys.stderr) as bar:
        for indices in length_sorted_batches(lengths, batch_size, max_batch_tokens):
            yield indices
            bar.update(len(indices))


def show_bar(n: int, show_progress_bar: bool | None) -> bool:
    """Whether to show a progress bar over n texts: as asked, or (None) from PROGRESS_BAR_MIN_TEXTS on."""
    return n >= PROGRESS_BAR_MIN_TEXTS if show_progress_bar is None else show_progress_bar
