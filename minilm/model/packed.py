"""A fast inference twin of `minilm.model.encoder.BertModel`: padding-free tokens and one fused QKV matmul.

The maths is the plain encoder's, step for step, and it reuses the plain encoder's modules (so
the same weights, no copy) except for one new Linear per layer that holds query, key and value
stacked. What changes is the data layout:

- **Packed tokens.** A batch is kept as (N, C), the N real tokens of all its texts end to end,
  instead of (B, T, C) with padding. The linear layers, GELU and LayerNorms (nearly all the
  FLOPs) then never touch a padding row.
- **Attention** is the only step that needs to know where one text ends. On CUDA, half
  precision, it runs Flash Attention's variable-length kernel straight on the packed tokens.
  Elsewhere the packed q, k, v are scattered into a padded (B, H, T, D) block for SDPA and the
  result gathered back; `tests/model/test_packed.py` checks both against the padded encoder.
- **Fused QKV.** One (C -> 3C) matmul instead of three (C -> C): a bigger GEMM, fewer calls.

Shape legend as in minilm.model.encoder, plus N = real tokens in the batch (sum of the lengths).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from .encoder import BertLayer, BertModel, key_mask


@cache
def flash_varlen_attention():
    """torch's varlen_attn, Flash Attention on packed tokens with no padding at all (CUDA, half
    precision; recent torch only), or None. Imported on first use: the import pulls in torch._dynamo,
    about 2 s, which every command's start would otherwise pay."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


@dataclass
class PackedIndex:
    """Where each of the N real tokens of a padded (B, T) batch sits, and the text boundaries."""

    flat: torch.Tensor  # (N,) int64: position of each real token in the flattened (B * T) batch
    key_mask: torch.Tensor  # (B, 1, 1, T) bool: True for real keys (the padded attention path)
    cu_seqlens: torch.Tensor  # (B + 1,) int32: offsets of each text in the packed tokens
    batch: int  # B
    max_len: int  # T

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor) -> PackedIndex:
        """attention_mask (B, T), 1 = real token, padding on the right."""
        B, T = attention_mask.shape
        lengths = attention_mask.sum(dim=1)  # (B,)
        cu_seqlens = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)  # (B + 1,)
        flat = attention_mask.bool().view(-1).nonzero().squeeze(1)  # (N,)
        return cls(flat, key_mask(attention_mask), cu_seqlens, B, T)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K) packed rows -> (B, T, K) with zero rows for padding."""
        padded = x.new_zeros(self.batch * self.max_len, x.size(-1))
        padded[self.flat] = x
        return padded.view(self.batch, self.max_len, -1)  # (B, T, K)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, K) -> (N, K), the real rows only."""
        return x.reshape(self.batch * self.max_len, -1)[self.flat]


def packed_attention(qkv: torch.Tensor, index: PackedIndex, num_heads: int) -> torch.Tensor:
    """Self-attention of each text with itself. qkv: (N, 3C) from the fused projection -> (N, C)."""
    N, C = qkv.size(0), qkv.size(1) // 3
    H, D = num_heads, C // num_heads
    if qkv.is_cuda and qkv.dtype in (torch.float16, torch.bfloat16) and (varlen_attn := flash_varlen_attention()):
        q, k, v = qkv.view(N, 3, H, D).unbind(1)  # each (N, H, D)
        return varlen_attn(q, k, v, index.cu_seqlens, index.cu_seqlens, index.max_len, index.max_len).reshape(N, C)
    return index.unpad(padded_attention(index.pad(qkv), index.key_mask, num_heads))  # (N, C)


def padded_attention(qkv: torch.Tensor, key_mask: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Self-attention over a padded batch: qkv (B, T, 3C) from the fused projection -> (B, T, C).

    key_mask: (B, 1, 1, T) bool, True for real keys. The q, k and v handed to SDPA are strided views of
    qkv, not copies; on the CPU, SDPA writes its result as (B, T, H, D), so the final reshape is free.
    """
    B, T, C = qkv.size(0), qkv.size(1), qkv.size(2) // 3
    H, D = num_heads, C // num_heads
    q, k, v = qkv.view(B, T, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, D)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)  # (B, H, T, D)
    return y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)


class PackedLayer(nn.Module):
    """One BertLayer over packed tokens, with query, key and value fused into one Linear."""

    def __init__(self, layer: BertLayer):
        super().__init__()
        attention = layer.attention.self
        self.num_heads = attention.num_heads
        C = attention.query.in_features
        self.qkv = nn.Linear(C, 3 * C)  # rows: query, then key, then value, as packed_attention splits them
        with torch.no_grad():
            self.qkv.weight.copy_(torch.cat([attention.query.weight, attention.key.weight, attention.value.weight]))
            self.qkv.bias.copy_(torch.cat([attention.query.bias, attention.key.bias, attention.value.bias]))
        self.attention_output = layer.attention.output  # the plain encoder's modules, shared
        self.intermediate = layer.intermediate
        self.output = layer.output

    def forward(self, x: torch.Tensor, index: PackedIndex) -> torch.Tensor:
        """(N, C) -> (N, C)"""
        a = self.attention_output(packed_attention(self.qkv(x), index, self.num_heads), x)
        return self.output(self.intermediate(a), a)


class PackedEncoder(nn.Module):
    """Inference-only `BertModel` with the same call signature; returns (B, T, C) like it.

    Dropout is never applied: build it from a model in eval mode.
    """

    def __init__(self, model: BertModel):
        super().__init__()
        self.config = model.config
        self.embeddings = model.embeddings
        self.layers = nn.ModuleList(PackedLayer(block) for block in model.encoder.layer)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T) ids and mask -> (B, T, C) hidden states, zero on padding rows."""
        index = PackedIndex.from_mask(attention_mask)
        x = index.unpad(
            self.embeddings(input_ids, token_type_ids)
        )  # (N, C): embedding lookups are cheap, padded or not
        for layer in self.layers:
            x = layer(x, index)
        return index.pad(x)  # (B, T, C)
