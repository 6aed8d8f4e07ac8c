"""Token vectors -> one sentence vector, as sentence-transformers `models/Pooling.py` and `models/Normalize.py` do.

Pure functions over (B, T, C) hidden states and a (B, T) attention mask (1 = real token).
all-MiniLM-L6-v2 uses `mean` followed by L2 normalization.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

PoolingMode = Literal["mean", "cls", "max"]
POOLING_MODES: tuple[PoolingMode, ...] = ("mean", "cls", "max")


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the real tokens' vectors: (B, T, C), (B, T) -> (B, C)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    summed = (hidden * weights).sum(dim=1)  # (B, C)
    # clamp as sentence-transformers does, so an all-padding row gives zeros, not NaN
    count = weights.sum(dim=1).clamp(min=1e-9)  # (B, 1)
    return summed / count


def cls_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The first token's vector ([CLS]): (B, T, C), (B, T) -> (B, C)."""
    return hidden[:, 0]


def max_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-channel maximum over the real tokens: (B, T, C), (B, T) -> (B, C)."""
    # sentence-transformers fills padding with -1e9 (not -inf) before the max; same result for real rows
    filled = hidden.masked_fill(~mask.bool().unsqueeze(-1), -1e9)  # (B, T, C)
    return filled.max(dim=1).values


_POOLERS = {"mean": mean_pool, "cls": cls_pool, "max": max_pool}


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: PoolingMode) -> torch.Tensor:
    """Dispatch to one of the poolers above: (B, T, C), (B, T) -> (B, C)."""
    try:
        pooler = _POOLERS[mode]
    except KeyError:
        raise ValueError(f"unknown pooling mode {mode!r}; choose one of {', '.join(POOLING_MODES)}") from None
    return pooler(hidden, mask)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Unit-length rows: (B, C) -> (B, C). Same as sentence-transformers' Normalize (F.normalize, eps 1e-12)."""
    return F.normalize(x, p=2, dim=-1)
