"""int8 inference: the encoder's Linear layers multiply in 8-bit integers; everything else stays float.

The recipe is LLM.int8()/SmoothQuant's "W8A8" for the four Linear layers of every block (the fused
query-key-value projection, the attention output, the two feed-forward halves), which hold
nearly all the FLOPs:

- **Weights** are quantized once, per output channel: each row of W gets its own scale,
  max|row| / 127, so a row of small weights keeps its precision.
- **Activations** are quantized on the fly, per token: each row of x gets its own scale. One
  token with large values then costs precision in its own row only.
- The integer matmul `torch._int_mm` (int8 x int8 -> int32) runs on VNNI or AMX-INT8, at about
  twice the bfloat16 peak. Its result times (token scale x channel scale), plus the bias, is
  the float output.
- **Smoothing** (SmoothQuant, Xiao et al. 2023, arXiv:2211.10438). A few input channels carry
  activations far larger than the rest, which would squeeze every other channel of a token
  into a few integer levels. Per input channel j, x_j is divided by s_j and the weight column
  W_j multiplied by s_j: the product is unchanged, but the outliers move into the weights,
  which are quantized per row and take them better.
  s_j = max|x_j|^alpha / max|W_j|^(1 - alpha), with max|x_j| measured on calibration text
  (`InputAbsmax`); `minilm.calibrate` writes the scales, `minilm.weights` finds and checks them.

Softmax, LayerNorm, GELU, attention, the residual adds and pooling run in float32 as before.
The encoder is `PackedEncoder` with these layers swapped in (`int8_encoder`).

Shape legend as in minilm.model.encoder: N rows (tokens), K input features, M output features.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ..base.numbers import checked_number
from .encoder import BertModel
from .packed import PackedEncoder

SMOOTHING_ALPHA = 0.7  # how much of the outliers moves into the weights; chosen on STS-B dev (docs/performance.md)
# The smoothing values int8 accepts. s_j multiplies a weight column and 1/s_j an input channel, in
# float32: 0 or a subnormal makes 1/s_j infinite, and a huge s_j overflows W_j * s_j (NaN vectors
# either way). smoothing_factors clamps at 1e-5 from below and gives a few thousand at most on real
# text; a value outside this range is damage, not calibration.
SMOOTHING_RANGE = (1e-6, 1e6)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row: x (N, K) float -> (q (N, K) int8, scale (N, 1)) with x ~= q * scale.

    The row's largest |value| becomes +-127 exactly, so no value rounds past the int8 range.
    x is overwritten (it is always a temporary here): every pass over it costs as much as the int8 matmul saves.
    """
    absmax = x.abs().amax(dim=-1, keepdim=True).clamp_(min=1e-12)  # (N, 1); an all-zero row stays zero
    return x.mul_(127 / absmax).round_().to(torch.int8), absmax / 127


# The Linear layers int8 replaces in each block, written once: (the checkpoint's name for the layer's
# input, under encoder.layer.{i}., and where a PackedEncoder layer holds the Linear). The fused QKV
# projection is named after the attention whose input it reads: its three parts share that input, and
# so one smoothing vector.
QUANTIZED_LINEARS = [
    ("attention.self", "qkv"),
    ("attention.output.dense", "attention_output.dense"),
    ("intermediate.dense", "intermediate.dense"),
    ("output.dense", "output.dense"),
]


def linear_quantized_inputs(model: PackedEncoder) -> Iterator[tuple[str, nn.Linear]]:
    """(checkpoint name of the Linear's input, the Linear) for every layer int8 replaces."""
    for i, layer in enumerate(model.layers):
        for name, where in QUANTIZED_LINEARS:
            yield f"encoder.layer.{i}.{name}", layer.get_submodule(where)


def quantized_input_widths(model: BertModel) -> dict[str, int]:
    """The input width K of every layer int8 replaces, by the names `linear_quantized_inputs` gives (float model:
    the attention's input is its query's)."""
    widths = {}
    for i, block in enumerate(model.encoder.layer):
        for name, _ in QUANTIZED_LINEARS:
            linear = block.get_submodule("attention.self.query" if name == "attention.self" else name)
            widths[f"encoder.layer.{i}.{name}"] = linear.in_features
    return widths


class Int8Linear(nn.Module):
    """y = x W^T + b, computed as int8 x int8 -> int32 with per-token and per-channel scales."""

    def __init__(self, linear: nn.Linear, smoothing: torch.Tensor):
        """linear: the float layer to replace; smoothing: (K,) the s_j above (all ones: no smoothing)."""
        super().__init__()
        weight = linear.weight.detach().float() * smoothing  # (M, K): column j times s_j, a new tensor
        weight_q, weight_scale = quantize_rows(weight)  # per output channel
        self.register_buffer("weight_t", weight_q.t().contiguous())  # (K, M) int8, the layout _int_mm takes
        self.register_buffer("weight_scale", weight_scale.view(-1))  # (M,)
        self.register_buffer("inverse_smoothing", 1 / smoothing.float())  # (K,)
        self.register_buffer("bias", linear.bias.detach().float())  # (M,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., K) float32 -> (..., M) float32"""
        rows = x.reshape(-1, x.size(-1))  # (N, K)
        q, scale = quantize_rows(rows * self.inverse_smoothing)  # a new tensor: x itself is left alone
        y = torch._int_mm(q, self.weight_t).float()  # (N, M) int32 sums, exact
        # one factor at a time, in place: a (N, 1) x (M,) outer product would cost a full extra pass
        return y.mul_(self.weight_scale).mul_(scale).add_(self.bias).view(*x.shape[:-1], -1)


def smoothing_factors(input_absmax: torch.Tensor, weight: torch.Tensor, alpha: float = SMOOTHING_ALPHA) -> torch.Tensor:
    """SmoothQuant's s_j = max|x_j|^alpha / max|W_j|^(1 - alpha): (K,) from (K,) and the (M, K) weight."""
    weight_absmax = weight.detach().float().abs().amax(dim=0)  # (K,): over the output channels
    s = input_absmax.float().clamp(min=1e-5) ** alpha / weight_absmax.clamp(min=1e-5) ** (1 - alpha)
    return s.clamp(min=1e-5)


def check_smoothing(smoothing: torch.Tensor, width: int, where: str) -> None:
    """Refuse a smoothing vector that would make Int8Linear's output non-finite or meaningless: not (width,),
    or a value NaN, infinite or outside SMOOTHING_RANGE. Raises ValueError (NumberError for a value)
    naming `where` and the first bad index, through minilm.base.numbers.checked_number's one rule."""
    if tuple(smoothing.shape) != (width,):
        raise ValueError(f"{where} has shape {tuple(smoothing.shape)}, expected ({width},)")
    low, high = SMOOTHING_RANGE
    values = smoothing.float()
    bad = ~(torch.isfinite(values) & (values >= low) & (values <= high))  # NaN compares False: bad
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        checked_number(values[i].item(), f"{where}[{i}]", minimum=low, maximum=high)  # raises, naming the value


def int8_encoder(model: BertModel, smoothing: dict[str, torch.Tensor]) -> PackedEncoder:
    """The packed encoder with every block's Linear layers in int8.

    smoothing: one (K,) vector per name of `linear_quantized_inputs` (what `minilm.calibrate` saves).
    Every vector is checked first (check_smoothing): a zero or NaN would give NaN vectors, not an error.
    The packed encoder shares the plain model's modules, so the attention output and feed-forward
    Linears of `model` itself become int8 too (their float32 weights do not stay in memory), as
    half precision casts `model` in place; its separate query, key and value stay float32.
    """
    packed = PackedEncoder(model).eval()
    names = [name for name, _ in linear_quantized_inputs(packed)]
    if missing := [n for n in names if n not in smoothing]:
        raise ValueError(f"int8 smoothing scales lack {len(missing)} layers, first {missing[0]}")
    for name, linear in linear_quantized_inputs(packed):
        check_smoothing(smoothing[name], linear.in_features, f"int8 smoothing scales {name!r}")
    for i, layer in enumerate(packed.layers):
        for name, where in QUANTIZED_LINEARS:
            owner_path, _, attribute = where.rpartition(".")
            owner = layer.get_submodule(owner_path)  # "" is the layer itself; the others are `model`'s own modules
            setattr(owner, attribute, Int8Linear(getattr(owner, attribute), smoothing[f"encoder.layer.{i}.{name}"]))
    return packed


class InputAbsmax:
    """Collects max|x_j| per input channel of every Linear int8 replaces, while the float model runs."""

    def __init__(self, model: PackedEncoder):
        self.absmax: dict[str, torch.Tensor] = {}
        self._hooks = [
            linear.register_forward_hook(self._observer(name)) for name, linear in linear_quantized_inputs(model)
        ]

    def _observer(self, name: str):
        def observe(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            x = inputs[0].detach().float()
            seen = x.abs().reshape(-1, x.size(-1)).amax(dim=0)  # (K,)
            self.absmax[name] = torch.maximum(self.absmax[name], seen) if name in self.absmax else seen

        return observe

    def close(self) -> dict[str, torch.Tensor]:
        for hook in self._hooks:
            hook.remove()
        return self.absmax


def calibrated_smoothing(
    model: PackedEncoder, input_absmax: dict[str, torch.Tensor], alpha: float = SMOOTHING_ALPHA
) -> dict[str, torch.Tensor]:
    """The smoothing vector of every int8 layer, from the float model and the observed input maxima."""
    return {
        name: smoothing_factors(input_absmax[name], linear.weight, alpha)
        for name, linear in linear_quantized_inputs(model)
    }
