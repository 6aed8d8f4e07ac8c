"""Token vectors -> one sentence vector, as sentence-transformers `models/Pooling.py` and `models/Normalize.py` do.

Pure functions over (B, T, C) hidden states and a (B, T) mask of the tokens to pool (1 = pooled),
one per mode sentence-transformers' Pooling has. The mask is the attention mask (batches are
right-padded), with a prompt's leading tokens set to 0 when the checkpoint pools without them
(`mask_prompt`). all-MiniLM-L6-v2 uses `mean` followed by L2 normalization.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

PoolingMode = Literal["mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
POOLING_MODES: tuple[PoolingMode, ...] = ("mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the real tokens' vectors: (B, T, C), (B, T) -> (B, C)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    summed = (hidden * weights).sum(dim=1)  # (B, C)
    # clamp as sentence-transformers does, so an all-padding row gives zeros, not NaN
    count = weights.sum(dim=1).clamp(min=1e-9)  # (B, 1)
    return summed / count


def mean_sqrt_len_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The real tokens' sum over the square root of their count: (B, T, C), (B, T) -> (B, C)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9).sqrt()


def weighted_mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens weighted by position, 1 for the first token ([CLS]) up to n for the last:
    (B, T, C), (B, T) -> (B, C)."""
    positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)  # (T,)
    weights = mask.to(hidden.dtype).unsqueeze(-1) * positions.view(1, -1, 1)  # (B, T, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The last real token's vector ([SEP] for BERT): (B, T, C), (B, T) -> (B, C); zeros for a row
    with no real token."""
    T = hidden.shape[1]
    last = T - 1 - mask.flip(1).argmax(dim=1)  # (B,) the last position whose mask is 1
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, last] * mask[rows, last].unsqueeze(-1).to(hidden.dtype)


def cls_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The first real token's vector: [CLS], unless a prompt's tokens are masked out of pooling, as
    sentence-transformers' include_prompt=False does; then the first token after the prompt.
    (B, T, C), (B, T) -> (B, C)."""
    first = mask.argmax(dim=1)  # (B,) the first position whose mask is 1 (0 for a row with none)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]


def max_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-channel maximum over the real tokens: (B, T, C), (B, T) -> (B, C)."""
    # padding can never be the largest: -inf, as sentence-transformers fills it
    filled = hidden.masked_fill(~mask.bool().unsqueeze(-1), float("-inf"))  # (B, T, C)
    return filled.max(dim=1).values


_POOLERS = {
    "mean": mean_pool,
    "cls": cls_pool,
    "max": max_pool,
    "mean_sqrt_len_tokens": mean_sqrt_len_pool,
    "weightedmean": weighted_mean_pool,
    "lasttoken": last_token_pool,
}


def mask_prompt(mask: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """The attention mask without a prompt's tokens ([CLS] and the prompt's pieces, the first
    `prompt_length` positions): (B, T) -> (B, T), a copy."""
    mask = mask.clone()
    mask[:, :prompt_length] = 0
    return mask


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


def sentence_embedding(hidden: torch.Tensor, mask: torch.Tensor, mode: PoolingMode, normalize: bool) -> torch.Tensor:
    """The sentence embedding from the last hidden states, as sentence-transformers' Pooling then Normalize
    modules give it: (B, T, C), (B, T) -> (B, C). SentenceEncoder and the heads' one pass both call this."""
    pooled = pool(hidden, mask, mode)
    return l2_normalize(pooled) if normalize else pooled
