"""Build docs/walkthrough-int8.md from docs/walkthrough-int8.in.md: one real activation row through int8.

    .venv/bin/python docs/make_walkthrough_int8.py           # rewrite docs/walkthrough-int8.md
    .venv/bin/python docs/make_walkthrough_int8.py --check   # exit 1 if it is out of date

tests/test_walkthrough_int8.py regenerates the page and compares it.

The placeholders are docs/make_walkthrough.py's ({{link:path.py:Qualname}} and {{name}}), filled by its
`fill()`. The numbers come from the real checkpoint and its shipped int8 scales. What depends on the
machine (whether this CPU has VNNI, so which integer matmul ran) is wrapped by `machine_dependent()`.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # docs/: the first walkthrough's generator

from make_walkthrough import ROOT, fill, machine_dependent, numbers, write_or_check

from minilm import SentenceEncoder
from minilm.cli import DEMO_SENTENCES
from minilm.model.encoder import key_mask
from minilm.model.int8 import SMOOTHING_ALPHA, Int8Linear, int8_encoder, quantize_rows
from minilm.model.packed import PackedIndex
from minilm.model.pooling import l2_normalize, mean_pool
from minilm.model.precision import CPU_FAST_FLAGS, cpu_flags
from minilm.text.tokenization import TokenBatch
from minilm.weights.int8_scales import load_int8_scales

TEMPLATE = ROOT / "docs" / "walkthrough-int8.in.md"
OUTPUT = ROOT / "docs" / "walkthrough-int8.md"
LAYER = "encoder.layer.0.intermediate.dense"  # the shipped scales' name for layer 0's feed-forward input
TOKEN = 0  # [CLS] of sentence 1: its row has the largest outlier of the sentence (the table shows every token)
OUTPUT_CHANNEL = 0  # the one output of the 1,536 whose sum is written out


@dataclass
class RowThroughInt8:
    """One token's feed-forward input in layer 0 of sentence 1, and every step int8 takes with it."""

    tokens: list[str]
    rows: torch.Tensor  # (T, C) float32: layer 0's feed-forward input for every token of sentence 1
    linear: torch.nn.Linear  # layer 0's intermediate.dense, float32 (C -> F)
    smoothing: torch.Tensor  # (C,) the shipped s_j of that layer
    plain: Int8Linear  # the layer in int8 without smoothing (s_j = 1)
    smoothed: Int8Linear  # the layer in int8 as dtype="int8" runs it
    q: torch.Tensor  # (C,) int8: the chosen row, smoothed and quantized
    scale: float  # its per-token scale
    accumulator: int  # sum_k q_k w_km for OUTPUT_CHANNEL, exact
    vnni: str | None  # the CPU flag that gives torch._int_mm its fast kernel here, or None

    @property
    def x(self) -> torch.Tensor:
        return self.rows[TOKEN]

    def products(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x W^T, (x / s)(W s)^T) in float32: (F,) each. Equal up to rounding, which is why smoothing is free."""
        W, s = self.linear.weight.detach(), self.smoothing
        return self.x @ W.T, (self.x / s) @ (W * s).T


def batch_of(encoder: SentenceEncoder, texts: list[str]) -> TokenBatch:
    encodings, _ = encoder.tokenizer.encode(texts)
    return encoder.tokenizer.pad(encodings)


def vnni_flag() -> str | None:
    """The VNNI or AMX-INT8 flag this CPU reports, or None (then `torch._int_mm` has no fast kernel)."""
    return next((flag for flag in CPU_FAST_FLAGS["int8"] if flag in cpu_flags()), None)


def integer_sums(q: torch.Tensor, weight_t: torch.Tensor, vnni: str | None) -> torch.Tensor:
    """(N, K) int8 x (K, M) int8 -> (N, M) exact integer sums: `torch._int_mm`, as Int8Linear calls it, where the CPU
    has VNNI; elsewhere the reference form, the same int8 values multiplied and added in int64."""
    if vnni:
        return torch._int_mm(q, weight_t)  # (N, M) int32
    return q.long() @ weight_t.long()  # (N, M) int64


def layer0_attention(encoder: SentenceEncoder, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer 0's attention sub-layer in float32, as BertOutput.forward computes it: (the residual sum its LayerNorm
    takes, the LayerNorm's output = the feed-forward input), each (B, T, C)."""
    model = encoder.model
    batch = batch_of(encoder, texts)
    attention = model.encoder.layer[0].attention
    with torch.inference_mode():
        embedded = model.embeddings(batch.input_ids)  # (B, T, C)
        residual = embedded + attention.output.dense(attention.self(embedded, key_mask(batch.attention_mask)))
        return residual, attention.output.LayerNorm(residual)  # (B, T, C) twice


def follow_row(encoder: SentenceEncoder, smoothing: dict[str, torch.Tensor]) -> RowThroughInt8:
    """Layer 0's feed-forward input for sentence 1, and the chosen token's row through Int8Linear step by step."""
    encodings, _ = encoder.tokenizer.encode(DEMO_SENTENCES[:1])
    rows = layer0_attention(encoder, DEMO_SENTENCES[:1])[1][0]  # (T, C)
    linear = encoder.model.encoder.layer[0].intermediate.dense
    s = smoothing[LAYER]
    plain, smoothed = Int8Linear(linear, torch.ones_like(s)), Int8Linear(linear, s)
    q, scale = quantize_rows(rows[TOKEN : TOKEN + 1] / s)  # (1, C), (1, 1): what Int8Linear.forward computes
    vnni = vnni_flag()
    accumulator = integer_sums(q, smoothed.weight_t, vnni)[0, OUTPUT_CHANNEL]
    return RowThroughInt8(
        list(encodings[0].tokens), rows, linear, s, plain, smoothed, q[0], scale.item(), int(accumulator), vnni
    )


def through_layers(
    encoder: SentenceEncoder, smoothing: dict[str, torch.Tensor], texts: list[str]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(cosine of int8 to float32 for every token after each layer: L tensors (N,), sentence vectors' cosines (B,)).

    The int8 encoder is built from a copy of the float model (int8_encoder swaps Linear layers in place), and run
    layer by layer as PackedEncoder.forward runs it. Pooled here, not through SentenceEncoder(dtype="int8"),
    which falls back to float32 on a CPU without VNNI.
    """
    int8 = int8_encoder(copy.deepcopy(encoder.model), smoothing)
    batch = batch_of(encoder, texts)
    index = PackedIndex.from_mask(batch.attention_mask)
    with torch.inference_mode():
        exact = encoder.model.hidden_states(batch.input_ids, batch.attention_mask)  # L + 1 of (B, T, C)
        x = index.unpad(int8.embeddings(batch.input_ids))  # (N, C)
        cosines = []
        for layer, reference in zip(int8.layers, exact[1:]):
            x = layer(x, index)
            cosines.append(F.cosine_similarity(x, index.unpad(reference), dim=-1))  # (N,)
        vectors = [l2_normalize(mean_pool(h, batch.attention_mask)) for h in (index.pad(x), exact[-1])]  # (B, C)
    return cosines, (vectors[0] * vectors[1]).sum(dim=-1)


@dataclass
class Work:
    """What one forward pass of T tokens computes, by kind of operation."""

    tokens: int
    linear_flops: int  # the four Linear layers of every block (counted by running the model)
    attention_flops: int  # q k^T and probabilities x v, every head of every block
    elementwise_values: int  # values through softmax, LayerNorm, GELU and the residual adds

    @property
    def linear_share(self) -> float:
        return self.linear_flops / (self.linear_flops + self.attention_flops)


def work(model: torch.nn.Module, tokens: int) -> Work:
    """The FLOPs of one text of `tokens` tokens through the float32 model.

    FlopCounterMode counts the matmuls torch dispatches: here only the Linear layers' addmm (the CPU's fused
    attention kernel has no FLOP formula), so attention's two matmuls are counted from their shapes."""
    config = model.config
    ids = torch.full((1, tokens), 1996)  # "the": the FLOPs depend on the shape only
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(ids, torch.ones_like(ids))
    counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    if set(counts) != {"aten.addmm"}:
        raise RuntimeError(f"expected only the Linear layers' addmm in the FLOP count, got {sorted(counts)}")
    T, C, F_, H, L = tokens, config.hidden_size, config.intermediate_size, config.num_attention_heads, model.num_layers
    attention = L * 2 * (2 * T * T * C)  # q k^T: (T, D) x (D, T) per head, H D = C; then (T, T) x (T, D)
    elementwise = L * (H * T * T + 2 * T * C + T * F_ + 2 * T * C)  # softmax, 2 LayerNorms, GELU, 2 residual adds
    return Work(T, counts["aten.addmm"], attention, elementwise)


# ------------------------------------------------------------------ formatting


def relative_error(approximate: torch.Tensor, exact: torch.Tensor) -> float:
    return ((approximate - exact).norm() / exact.norm()).item()


def levels_used(q: torch.Tensor) -> int:
    return len(torch.unique(q))


def quantized(row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_rows on a copy (it overwrites its input): (C,) -> (q (C,) int8, scale (1,))."""
    q, scale = quantize_rows(row.unsqueeze(0).clone())
    return q[0], scale[0]


def values(encoder: SentenceEncoder) -> dict[str, str]:
    """Everything the int8 walkthrough quotes."""
    smoothing = load_int8_scales(encoder.checkpoint)
    row = follow_row(encoder, smoothing)
    x, s, W = row.x, row.smoothing, row.linear.weight.detach()
    out = {"token": f"`{row.tokens[TOKEN]}`", "sentence": DEMO_SENTENCES[0], "alpha": str(SMOOTHING_ALPHA)}
    out["n_tokens"], out["width"], out["out_width"] = str(len(row.tokens)), str(x.numel()), str(W.size(0))
    out["row_first"] = numbers(x, 6, 3)

    # Outliers: the row's largest channels against its median, and the per-token scale without smoothing.
    top = x.abs().topk(3).indices.tolist()
    median = x.abs().median().item()
    out["median"] = f"{median:.3f}"
    out["outlier_table"] = "\n".join(
        ["| channel | x_j | \\|x_j\\| / median |", "|---:|---:|---:|"]
        + [f"| {j} | {x[j]:+.2f} | {abs(x[j].item()) / median:.0f}× |" for j in top]
    )
    out["top"], out["top_value"] = str(top[0]), f"{x[top[0]].abs():.2f}"
    out["top_ratio"] = f"{x[top[0]].abs().item() / median:.0f}"
    q_plain, scale_plain = quantized(x)
    out["plain_scale"] = f"{scale_plain.item():.4f}"
    out["median_levels"] = f"{median / scale_plain.item():.2f}"
    out["plain_levels"], out["plain_zeros"] = str(levels_used(q_plain)), str(int((q_plain == 0).sum()))
    residual, normalized = layer0_attention(encoder, DEMO_SENTENCES)
    out["cls_values"] = ", ".join(f"{v:.2f}" for v in normalized[:, 0, top[0]].tolist())  # [CLS] of every sentence
    r = residual[0, TOKEN]  # (C,) what LayerNorm normalized into x
    out["residual_top"], out["residual_ratio"] = f"{r[top[0]]:.2f}", f"{r[top[0]].abs() / r.abs().median():.0f}"
    centred = (r - r.mean()) ** 2
    out["variance_share"] = f"{centred[top[0]] / centred.sum():.0%}"
    out["plain_row_error"] = f"{relative_error(q_plain.float() * scale_plain, x):.1%}"

    # SmoothQuant: the shipped s_j for those channels, and the calibration maximum they imply.
    weight_absmax = W.abs().amax(dim=0)  # (C,) max|W_j| over the output channels
    implied = (s * weight_absmax ** (1 - SMOOTHING_ALPHA)) ** (1 / SMOOTHING_ALPHA)  # max|x_j| solved from s_j
    rows = [
        "| channel | x_j here | max\\|x_j\\| (calibration) | max\\|W_j\\| | s_j | x_j / s_j |",
        "|---:|" + "---:|" * 5,
    ]
    for j in top:
        rows.append(
            f"| {j} | {x[j]:+.2f} | {implied[j]:.2f} | {weight_absmax[j]:.3f} | {s[j]:.2f} | {x[j] / s[j]:+.2f} |"
        )
    out["smoothing_table"] = "\n".join(rows)
    out["s_median"], out["s_min"], out["s_max"] = f"{s.median():.2f}", f"{s.min():.2f}", f"{s.max():.2f}"
    out["s_argmax"] = str(int(s.argmax()))
    smooth_row = x / s
    out["smooth_first"] = numbers(smooth_row, 6, 3)
    out["smooth_absmax"], out["smooth_median"] = f"{smooth_row.abs().max():.2f}", f"{smooth_row.abs().median():.3f}"
    out["smooth_ratio"] = f"{smooth_row.abs().max().item() / smooth_row.abs().median().item():.0f}"
    # How flat the weights' rows are (largest |weight| over the median one, median over the rows), before and after.
    # and how often the outlier channel's column holds a row's largest weight.
    for key, weight in (("w", W), ("ws", W * s)):
        spread = weight.abs().amax(dim=1) / weight.abs().median(dim=1).values  # (F,)
        out[f"{key}_ratio"] = f"{spread.median():.1f}"
        out[f"{key}_top_rows"] = f"{(weight.abs().argmax(dim=1) == top[0]).float().mean():.0%}"
    exact, smoothed_product = row.products()
    # float32 rounding noise, different on every CPU
    out["product_difference"] = machine_dependent(f"{(smoothed_product - exact).abs().max().item():.1e}")
    out["product_max"] = f"{exact.abs().max():.1f}"

    # With and without smoothing, for every token of the sentence.
    with torch.inference_mode():
        y_float, y_plain, y_smooth = row.linear(row.rows), row.plain(row.rows), row.smoothed(row.rows)
    table = [
        "| token | largest \\|x_j\\| (channel) | median \\|x_j\\| | levels used: plain | smoothed "
        "| output error: plain | smoothed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for t, token in enumerate(row.tokens):
        r = row.rows[t]
        j = int(r.abs().argmax())
        table.append(
            f"| `{token}` | {r[j].abs():.2f} ({j}) | {r.abs().median():.3f} | {levels_used(quantized(r)[0])} "
            f"| {levels_used(quantized(r / s)[0])} | {relative_error(y_plain[t], y_float[t]):.2%} "
            f"| {relative_error(y_smooth[t], y_float[t]):.2%} |"
        )
    out["token_table"] = "\n".join(table)
    worse = [
        f"`{token}`"
        for t, token in enumerate(row.tokens)
        if relative_error(y_smooth[t], y_float[t]) > relative_error(y_plain[t], y_float[t])
    ]
    out["worse_tokens"] = " and ".join(worse) if len(worse) < 3 else ", ".join(worse[:-1]) + " and " + worse[-1]
    out["smooth_levels"], out["smooth_zeros"] = str(levels_used(row.q)), str(int((row.q == 0).sum()))
    out["plain_error"] = f"{relative_error(y_plain[TOKEN], y_float[TOKEN]):.2%}"
    out["smooth_error"] = f"{relative_error(y_smooth[TOKEN], y_float[TOKEN]):.2%}"

    # Quantize: the row's per-token scale and a weight row's per-channel scale.
    m = OUTPUT_CHANNEL
    weight_row = row.smoothed.weight_t[:, m]  # (C,) int8: row m of W s, quantized
    weight_scale = row.smoothed.weight_scale[m].item()
    out["scale"], out["q_first"] = f"{row.scale:.5f}", "[" + ", ".join(str(v) for v in row.q[:8].tolist()) + ", …]"
    out["w_first"] = numbers(W[m] * s, 6)
    out["w_absmax"], out["w_scale"] = f"{(W[m] * s).abs().max():.4f}", f"{weight_scale:.6f}"
    out["wq_first"] = "[" + ", ".join(str(v) for v in weight_row[:8].tolist()) + ", …]"
    out["w_scales_range"] = (
        f"{row.smoothed.weight_scale.min():.6f} to {row.smoothed.weight_scale.max():.6f}"  # over the 1,536 rows
    )
    out["m"], out["max_sum"] = str(m), f"{x.numel() * 127 * 127:,}"

    # torch._int_mm: the int32 sum for output m, rescaled, plus the bias, against float32.
    bias = row.linear.bias[m].item()
    rescaled = row.accumulator * row.scale * weight_scale
    out["accumulator"], out["rescaled"], out["bias"] = f"{row.accumulator:,}", f"{rescaled:+.5f}", f"{bias:+.5f}"
    out["int8_output"], out["float_output"] = f"{y_smooth[TOKEN, m]:+.5f}", f"{y_float[TOKEN, m]:+.5f}"
    out["output_difference"] = f"{abs(y_smooth[TOKEN, m] - y_float[TOKEN, m]):.5f}"
    if row.vnni:
        ran = (
            f"This page was made on a CPU with {row.vnni.upper()}, so the sum below is the one "
            "`torch._int_mm` returned, as in `Int8Linear.forward`."
        )
    else:
        ran = (
            "This page was made on a CPU without VNNI or AMX-INT8, where `torch._int_mm` has no fast kernel, so "
            "the sum below is its reference form: the same int8 values multiplied and added exactly in int64."
        )
    out["which_matmul"] = machine_dependent(ran)

    # The error through the layers.
    cosines, sentence_cosines = through_layers(encoder, smoothing, DEMO_SENTENCES)
    n = len(row.tokens)
    rows = [
        f"| after layer | {out['token']} | mean over the {n} tokens | lowest of the tokens |",
        "|---:|---:|---:|---:|",
    ]
    for i, c in enumerate(cosines):
        first = c[:n]  # sentence 1's tokens come first in the packed rows
        rows.append(f"| {i + 1} | {first[TOKEN]:.5f} | {first.mean():.5f} | {first.min():.5f} |")
    out["layer_table"] = "\n".join(rows)
    means = [c[:n].mean().item() for c in cosines]
    out["n_layers"], out["n_linears"] = str(len(cosines)), str(len(smoothing))
    out["first_mean"], out["last_mean"] = f"{means[0]:.5f}", f"{means[-1]:.5f}"
    out["lowest_cosine"] = f"{min(c[:n].min().item() for c in cosines):.5f}"
    out["sentence_cosine"] = f"{sentence_cosines[0]:.5f}"
    out["other_cosines"] = " and ".join(f"{c:.5f}" for c in sentence_cosines[1:].tolist())

    # Why the rest stays float: the work by kind, for this sentence and for the longest input.
    short, long = work(encoder.model, n), work(encoder.model, encoder.max_seq_length)
    rows = ["| tokens | Linear FLOPs | attention matmul FLOPs | Linear share | values through element-wise ops |"]
    rows.append("|---:|---:|---:|---:|---:|")
    for w in (short, long):
        rows.append(
            f"| {w.tokens} | {w.linear_flops:,} | {w.attention_flops:,} | {w.linear_share:.1%} "
            f"| {w.elementwise_values:,} |"
        )
    out["work_table"] = "\n".join(rows)
    out["short_share"], out["long_share"] = f"{short.linear_share:.1%}", f"{long.linear_share:.1%}"
    out["max_tokens"] = str(long.tokens)
    out["flops_per_value"] = f"{short.linear_flops / short.elementwise_values:,.0f}"

    return out


def render(encoder: SentenceEncoder) -> str:
    return fill(TEMPLATE, values(encoder), Path(__file__).name)


def main() -> int:
    return write_or_check(OUTPUT, lambda: render(SentenceEncoder.from_pretrained()), doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
