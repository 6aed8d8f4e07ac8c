"""speed.py --profile: where our encode spends its time in one dtype, per corpus (tokenization, then
the torch ops by group, from torch.profiler).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minilm import SentenceEncoder

CASTS = "int8 quantize/dequantize, casts"
# profiler op name -> where the time goes. The groups are disjoint (asserted below), so their
# shares add up; aten::copy_ is split by its caller instead (see op_group).
OP_GROUPS = {
    "matmul": ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::_int_mm"),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math"),
    "GELU, LayerNorm, adds": ("aten::gelu", "aten::native_layer_norm", "aten::add", "aten::add_"),
    CASTS: ("aten::abs", "aten::amax", "aten::clamp_", "aten::mul_", "aten::round_", "aten::to", "aten::_to_copy"),
    "copies and index ops": (
        "aten::index_select",
        "aten::index",
        "aten::index_put_",
        "aten::nonzero",
        "aten::embedding",
    ),
}
GROUP_OF = {op: group for group, ops in OP_GROUPS.items() for op in ops}
assert len(GROUP_OF) == sum(len(ops) for ops in OP_GROUPS.values()), "an op is in two groups"


def op_group(event) -> str | None:
    """The group a profiler event's self time counts in, or None (then it is "other").

    aten::copy_ does two jobs: under aten::_to_copy it is a dtype cast (int8's quantize and
    dequantize, bf16's output cast), anywhere else a plain copy (contiguous, clone).
    """
    if event.name == "aten::copy_":
        parent = event.cpu_parent
        return CASTS if parent is not None and parent.name == "aten::_to_copy" else "copies and index ops"
    return GROUP_OF.get(event.name)


def profile(corpora: dict[str, list[str]], dtype: str) -> str:
    """Where our encode in `dtype` spends its time, per corpus: tokenization, then the torch ops by group."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a fallback is said in the title instead
        encoder = SentenceEncoder.from_pretrained(dtype=dtype)
    encoder.encode(corpora["mixed"][:64])
    runs = "" if encoder.dtype == dtype else f" (falls back to {encoder.dtype} here)"
    lines = [
        f"Where our {dtype} time goes{runs} (torch.profiler, share of wall time):\n",
        "| corpus | wall s | tokenize | " + " | ".join(OP_GROUPS) + " | other (Python, pooling, padding) |",
        "|---|---:" + "|---:" * (len(OP_GROUPS) + 2) + "|",
    ]
    for name, texts in corpora.items():
        start = time.perf_counter()
        encoder.tokenizer.encode(texts)
        tokenize = time.perf_counter() - start
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            encoder.encode(texts, show_progress_bar=False)
            wall = time.perf_counter() - start
        shares = dict.fromkeys(OP_GROUPS, 0.0)
        for event in prof.events():
            if group := op_group(event):
                shares[group] += event.self_cpu_time_total / 1e6
        other = wall - tokenize - sum(shares.values())
        cells = " | ".join(f"{100 * v / wall:.0f}%" for v in [tokenize, *shares.values(), other])
        lines.append(f"| {name} | {wall:.1f} | {cells} |")
    return "\n".join(lines)
