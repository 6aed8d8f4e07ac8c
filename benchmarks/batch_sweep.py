"""Throughput against batch size and token budget, per compute dtype: where the defaults of
minilm.encoders.batching (CPU_BATCH_TOKENS, DEFAULT_BATCH_TEXTS) come from.

    python benchmarks/batch_sweep.py                  # float32, bfloat16 and int8 (where native); ~10 min
    python benchmarks/batch_sweep.py --dtypes int8 --rounds 3

For each dtype, in a process of its own (int8 and half precision rebuild the model in place), our
encoder embeds the short corpus (the 2,758 STS-B test sentences) and a slice of the long one
(CoNLL-2003 passages of 128-256 tokens, benchmarks/corpora.py) under two families of settings:

- token budgets: batch_size 1024 (so the budget alone decides) and max_batch_tokens from 256 up,
  plus no budget at all (then batch_size 32, sentence-transformers' default);
- batch sizes 32 ... 1024 with no max_batch_tokens: the dtype's default budget applies, and the
  spread of these rows is the "no batch-size cliff" check (every size within 15 % of the best);
- the defaults: encode(texts) with no batch argument.

Settings are timed in interleaved rounds (every setting once per round) and the median is kept, so
that a noisy neighbour slows every setting alike. Prints the CPU, the GEMM peaks (machine.py's) and
one table per dtype: sent/s per corpus and its share of the best setting on that corpus.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpora import long_corpus, short_corpus
from machine import cpu_model, gemm_peak, native

from minilm import SentenceEncoder
from minilm.encoders.batching import CPU_BATCH_TOKENS, DEFAULT_BATCH_TEXTS

BUDGETS = (256, 512, 1024, 2048, 4096, 8192)
BATCH_SIZES = (32, 64, 128, 256, 512, 1024)
LONG_TEXTS = 300  # of the 1,000 long passages: enough for many batches at every setting


def settings() -> list[tuple[str, int | None, int | None]]:
    """(label, batch_size, max_batch_tokens) in table order; None: encode's default."""
    rows: list[tuple[str, int | None, int | None]] = [("defaults (no arguments)", None, None)]
    rows += [(f"max_batch_tokens={b}", 1024, b) for b in BUDGETS]
    rows += [(f"batch_size={n}", n, None) for n in BATCH_SIZES]
    rows.append(("batch_size=32, no budget (before)", 32, 10**9))
    return rows


def sweep(dtype: str, rounds: int) -> dict:
    """Runs in the child process: {label: {corpus: median sent/s}} plus the defaults in use."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        encoder = SentenceEncoder.from_pretrained(dtype=dtype)
    corpora = {"short": short_corpus(), "long": long_corpus(encoder.tokenizer.tokenizer)[:LONG_TEXTS]}
    encoder.encode(corpora["short"][:256], show_progress_bar=False)  # warm-up
    timings: dict[str, dict[str, list[float]]] = {label: {c: [] for c in corpora} for label, _, _ in settings()}
    for _ in range(rounds):
        for label, batch_size, max_batch_tokens in settings():
            for name, texts in corpora.items():
                start = time.perf_counter()
                encoder.encode(texts, batch_size, max_batch_tokens=max_batch_tokens, show_progress_bar=False)
                timings[label][name].append(len(texts) / (time.perf_counter() - start))
    medians = {label: {c: statistics.median(v) for c, v in by.items()} for label, by in timings.items()}
    return {"dtype": encoder.dtype, "defaults": list(encoder.batching()), "sent_per_s": medians}


def table(result: dict) -> str:
    corpora = list(next(iter(result["sent_per_s"].values())))
    best = {c: max(row[c] for row in result["sent_per_s"].values()) for c in corpora}
    lines = [
        "| setting | " + " | ".join(f"{c} sent/s | {c} % of best" for c in corpora) + " |",
        "|---|" + "---:|---:|" * len(corpora),
    ]
    for label, row in result["sent_per_s"].items():
        cells = " | ".join(f"{row[c]:,.0f} | {100 * row[c] / best[c]:.0f}%" for c in corpora)
        lines.append(f"| {label} | {cells} |")
    sizes = [result["sent_per_s"][f"batch_size={n}"] for n in BATCH_SIZES]
    spread = ", ".join(f"{c} {100 * min(r[c] for r in sizes) / best[c]:.0f}%" for c in corpora)
    lines.append(f"\nbatch_size 32-1024 under the default budget: the slowest is at {spread} of the best")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    dtypes = [d for d in ("float32", "bfloat16", "int8") if d == "float32" or native(d)]
    parser.add_argument("--dtypes", nargs="+", default=dtypes, help=f"default here: {' '.join(dtypes)}")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the median is kept (default 2)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one dtype, in its own process; prints JSON
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(sweep(args.child, args.rounds)))
        return 0
    peaks = {str(d).removeprefix("torch."): gemm_peak(d) for d in (torch.float32, torch.bfloat16, torch.int8)}
    print(f"CPU: {cpu_model()}; {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("GEMM peak: " + ", ".join(f"{d} {v:.0f} G(FL)OP/s" for d, v in peaks.items()))
    print(f"defaults: DEFAULT_BATCH_TEXTS {DEFAULT_BATCH_TEXTS}, CPU_BATCH_TOKENS {CPU_BATCH_TOKENS}")
    for dtype in args.dtypes:
        command = [sys.executable, __file__, "--child", dtype, "--rounds", str(args.rounds)]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        print(f"\n{dtype} (runs {result['dtype']}; defaults: batch_size, max_batch_tokens = {result['defaults']}):\n")
        print(table(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
