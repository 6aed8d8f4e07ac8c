"""int8 with its element-wise steps fused: the packed encoder's own layers, compiled between the matmuls.

Eager int8 (minilm.model.int8) makes many passes over memory around each integer matmul: the
per-token quantize before it (scale by the smoothing, abs, row max, scale, round, cast), the
dequantize after it (cast, two scales, bias), then GELU, or the residual add and LayerNorm. Each
pass reads and writes a whole (N, K) tensor. Inductor (torch.compile's compiler) turns each run of
these steps between two matmuls into one C++ loop over the rows, which reads its input once and
writes once: on the feed-forward, the int32 sums come in and the int8 input of the next matmul
goes out. The matmuls stay `torch._int_mm` calls, and attention stays eager SDPA.

Nothing is rewritten: the compiled code is `PackedLayer`'s modules (Int8Linear, LayerNorm, GELU),
split into two regions per layer around attention:

    project_qkv      x -> quantize -> int8 matmul -> dequantize + bias, gathered into padded (B*T, 3C) rows
    padded_attention SDPA, eager, as in minilm.model.packed
    after_attention  gather the real rows -> attention output (+ residual, LayerNorm) -> feed-forward

Padding for attention is a gather inside the first region and unpadding a gather inside the second,
so the (N, 3C) projection is never written unpadded and the attention output never copied.

One compile serves all layers (their weights are the compiled code's inputs, not constants) and
every batch: the row counts are marked dynamic. The numbers are eager int8's up to rounding (the
compiled quantizer multiplies by 127 * (1 / max) where eager divides 127 by max, so a value on a
rounding edge can land one integer step away); `tests/model/test_fused.py` holds the fused path to
the same quality budget.

The first batch compiles (inductor needs a C++ compiler): about 15 s on 2 cores, or about 3 s in a
new process once inductor's on-disk cache holds the kernels (docs/performance.md). If compiling fails,
for want of a compiler or otherwise, the encoder says so once (RuntimeWarning, `fallback_note`) and
runs eager int8 from then on.

Shape legend as in minilm.model.packed: N real tokens, B texts, T longest text, C hidden.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .packed import PackedEncoder, PackedIndex, PackedLayer, padded_attention


def padded_source(index: PackedIndex) -> torch.Tensor:
    """(B * T,) int64: the packed row each position of the padded batch holds; N (one past the last row) for padding.

    `gather_rows` with it is PackedIndex.pad written as a gather, which inductor fuses into the step
    that produces the rows (eager, PackedIndex.pad's scatter into zeros is the faster of the two).
    """
    N, device = index.flat.numel(), index.flat.device
    source = torch.full((index.batch * index.max_len,), N, dtype=torch.int64, device=device)
    source[index.flat] = torch.arange(N, device=device)
    return source


def gather_rows(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Rows of x (N, K) picked by source (R,), a zero row where source is N: -> (R, K)."""
    return F.pad(x, (0, 0, 0, 1))[source]  # row N is the zero row F.pad appends


def project_qkv(layer: PackedLayer, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Compiled region 1: x (N, C) -> the fused query-key-value projection, padded: (B * T, 3C)."""
    return gather_rows(layer.qkv(x), source)


def after_attention(layer: PackedLayer, attended: torch.Tensor, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Compiled region 2: the rest of the block. attended (B * T, C) padded, flat (N,), x (N, C) -> (N, C)."""
    a = layer.attention_output(attended[flat], x)  # LayerNorm(x + dense(attention)), post-LN as in BertOutput
    return layer.output(layer.intermediate(a), a)


class FusedEncoder(nn.Module):
    """A `PackedEncoder` (int8) run as compiled regions around the matmuls; same call signature, (B, T, C) out.

    CPU only, inference only. `fallback_note` is None while the compiled path runs, else why it stopped.
    """

    def __init__(self, packed: PackedEncoder):
        super().__init__()
        self.packed = packed
        self.config = packed.config
        self.fallback_note: str | None = None
        try:
            # fullgraph: a region that would not compile whole fails (and falls back) instead of running in
            # pieces. Nothing compiles yet: that happens on the first batch, for the thread count then set.
            self.project_qkv = torch.compile(project_qkv, fullgraph=True)
            self.after_attention = torch.compile(after_attention, fullgraph=True)
        except RuntimeError as error:  # torch.compile does not run here at all (e.g. a Python it cannot trace)
            self.fall_back(error)

    def fall_back(self, error: Exception) -> None:
        """From now on run eager int8, and say why once."""
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        self.fallback_note = f"fused int8 could not be compiled ({reason}); running eager int8 instead"
        warnings.warn(self.fallback_note, RuntimeWarning, stacklevel=3)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T) ids and mask -> (B, T, C) hidden states, zero on padding rows."""
        if self.fallback_note is None:
            try:
                return self.fused_forward(input_ids, attention_mask, token_type_ids)
            except torch._dynamo.exc.TorchDynamoException as error:  # compiling failed (no C++ compiler, ...)
                self.fall_back(error)  # an error of a kernel itself is no TorchDynamoException: it propagates
        return self.packed(input_ids, attention_mask, token_type_ids)

    def fused_forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        """forward's compiled path: per layer, region 1, eager SDPA, region 2."""
        index = PackedIndex.from_mask(attention_mask)
        B, T, C = index.batch, index.max_len, self.config.hidden_size
        source = padded_source(index)  # (B * T,)
        x = index.unpad(self.packed.embeddings(input_ids, token_type_ids))  # (N, C)
        for rows in (source, index.flat, x):
            torch._dynamo.maybe_mark_dynamic(rows, 0)  # one compile for every N and B * T
        for layer in self.packed.layers:
            qkv = self.project_qkv(layer, x, source).view(B, T, 3 * C)  # (B, T, 3C)
            attended = padded_attention(qkv, index.key_mask, layer.num_heads).view(B * T, C)  # (B * T, C)
            torch._dynamo.maybe_mark_dynamic(attended, 0)
            x = self.after_attention(layer, attended, index.flat, x)  # (N, C)
        return index.pad(x)  # (B, T, C)
