"""CPU inference speed: every engine on the same real corpora, in one process, in one run.

    python benchmarks/speed.py            # full run (about 15 min on 2 cores)
    python benchmarks/speed.py --quick    # about 1 min: small slices of each corpus, one timing each

Engines: sentence-transformers fp32 (batch 32, the reference every ratio is against) and under
bf16 autocast; ONNX Runtime fp32 on the same weights (our encoder exported with torch.onnx); and
ours in every mode. Corpora (benchmarks/corpora.py): short = the 2,758 STS-B test sentences,
long = 1,000 CoNLL-2003 passages of 128-256 tokens, mixed = both, shuffled.

Columns: sentences/s and tokens/s (best of --repeats), peak RSS growth while the engine loads and
runs, the ratio against sentence-transformers fp32 on the same corpus, and the share of the
roofline: tokens/s x 21.2 MFLOP (the encoder's matmul FLOPs per token) over the GEMM peak
measured at the start of this run in the dtype the engine multiplies in. Quality: STS-B test
Spearman x 100 (short corpus) and the minimum cosine to our fp32 embeddings of the same texts.
Prints a markdown table; --json also writes the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpora import long_corpus, mixed_corpus, read_stsb_test, short_corpus

from minilm import SentenceEncoder
from minilm.model.packed import PackedEncoder
from minilm.model.pooling import l2_normalize, mean_pool
from minilm.model.precision import inference_model, resolve_dtype
from minilm.text.tokenization import length_sorted_batches

REFERENCE = "sentence-transformers fp32"
OURS_FP32 = "ours fp32 (default)"  # the min-cosine column compares every engine with this one
GEMM_SHAPE = (4096, 384, 1536)  # tokens x hidden x feed-forward: the encoder's biggest matmul


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


def gemm_peak(dtype: torch.dtype, repeats: int = 20) -> float:
    """GFLOP/s of one (4096 x 384) @ (384 x 1536) matmul in `dtype`, best of `repeats`."""
    m, k, n = GEMM_SHAPE
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9


# ---------------------------------------------------------------------------- memory


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def peak_rss_growth() -> Iterator[dict[str, float]]:
    """Samples RSS every 2 ms; yields a dict that gets 'mb': the peak minus the RSS at entry."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed memory of earlier engines back first
    base = rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.002):
            peak[0] = max(peak[0], rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    result: dict[str, float] = {}
    try:
        yield result
    finally:
        done.set()
        thread.join()
        result["mb"] = (max(peak[0], rss_bytes()) - base) / 2**20


# ---------------------------------------------------------------------------- engines

Embed = Callable[[list[str]], np.ndarray]  # texts -> (N, C) normalized float32


@dataclass
class Engine:
    name: str
    compute: str  # dtype the matmuls run in: picks the roofline
    load: Callable[[], Embed]
    note: str = ""


def ours(
    folder: Path,
    dtype: str,
    batch_size: int = 32,
    max_batch_tokens: int | None = None,
    packed: bool = False,
    forced: bool = False,
) -> Callable[[], Embed]:
    """Our SentenceEncoder. forced: run `dtype` even where resolve_dtype would fall back (to show why it does)."""

    def load() -> Embed:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            encoder = SentenceEncoder.from_pretrained(str(folder), dtype="float32" if forced else dtype)
        if forced:
            encoder.dtype, encoder.runner = dtype, inference_model(encoder.model, dtype)
        elif packed:
            encoder.runner = PackedEncoder(encoder.model).eval()
        return lambda texts: encoder.encode(
            texts, batch_size=batch_size, max_batch_tokens=max_batch_tokens, show_progress_bar=False
        )

    return load


def sentence_transformers(folder: Path, autocast: bool) -> Callable[[], Embed]:
    def load() -> Embed:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(folder), device="cpu")

        def embed(texts: list[str]) -> np.ndarray:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return model.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True).astype(
                    np.float32
                )

        return embed

    return load


def onnx_runtime(folder: Path) -> Callable[[], Embed]:
    """Our fp32 encoder exported to ONNX, run by ONNX Runtime; same tokenizer, batching and pooling as ours."""

    def load() -> Embed:
        import onnxruntime as ort

        encoder = SentenceEncoder.from_pretrained(str(folder))
        path = Path(tempfile.mkdtemp(prefix="minilm-onnx-")) / "encoder.onnx"
        ids = torch.randint(1000, 2000, (2, 9))
        axes = {0: "batch", 1: "tokens"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                encoder.model,
                (ids, torch.ones_like(ids)),
                str(path),
                input_names=["input_ids", "attention_mask"],
                output_names=["hidden"],
                dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes},
                dynamo=False,
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "0"
        )  # idle threads would steal the next engine's cores
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def embed(texts: list[str]) -> np.ndarray:
            encodings, _ = encoder.tokenizer.encode(texts)
            out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
            for indices in length_sorted_batches([len(e.ids) for e in encodings], 32):
                batch = encoder.tokenizer.pad([encodings[i] for i in indices])
                hidden = session.run(
                    None, {"input_ids": batch.input_ids.numpy(), "attention_mask": batch.attention_mask.numpy()}
                )[0]
                out[indices] = l2_normalize(mean_pool(torch.from_numpy(hidden), batch.attention_mask)).numpy()
            return out

        return embed

    return load


def engines(folder: Path, compile_too: bool) -> list[Engine]:
    bf16, note = resolve_dtype("bfloat16", torch.device("cpu"))
    fallback = f"falls back to {bf16}: no AMX/AVX512-BF16" if note else ""
    _, note16 = resolve_dtype("float16", torch.device("cpu"))
    listed = [
        Engine(REFERENCE, "float32", sentence_transformers(folder, autocast=False)),
        Engine("sentence-transformers bf16 autocast", "bfloat16", sentence_transformers(folder, autocast=True)),
        Engine("onnxruntime fp32", "float32", onnx_runtime(folder)),
        Engine(OURS_FP32, "float32", ours(folder, "float32")),
        Engine("ours fp32 packed+fused QKV", "float32", ours(folder, "float32", packed=True)),
        Engine(
            "ours fp32 max_batch_tokens=2048", "float32", ours(folder, "float32", batch_size=256, max_batch_tokens=2048)
        ),
        Engine("ours --dtype bfloat16", bf16, ours(folder, "bfloat16"), fallback),
    ]
    if not note16:  # where float16 falls back it is the float32 row again
        listed.append(Engine("ours --dtype float16", "float16", ours(folder, "float16")))
    if note:  # show what the fallback avoids
        listed.append(
            Engine(
                "ours bf16 forced (emulated)",
                "bfloat16",
                ours(folder, "bfloat16", forced=True),
                "why the fallback exists",
            )
        )
    if compile_too:
        listed.append(Engine("ours fp32 torch.compile", "float32", compiled(folder)))
    return listed


def compiled(folder: Path) -> Callable[[], Embed]:
    def load() -> Embed:
        encoder = SentenceEncoder.from_pretrained(str(folder))
        encoder.runner = torch.compile(encoder.model, dynamic=True)
        return lambda texts: encoder.encode(texts, show_progress_bar=False)

    return load


# ---------------------------------------------------------------------------- measuring


@dataclass
class Row:
    engine: str
    corpus: str
    sentences_per_s: float
    tokens_per_s: float
    peak_rss_mb: float
    ratio: float = float("nan")  # against sentence-transformers fp32 on the same corpus
    roofline: float = float("nan")  # share of the GEMM peak
    spearman: float = float("nan")  # STS-B test x 100, short corpus only
    min_cos: float = float("nan")  # against ours fp32 on the same texts
    note: str = ""


def best_time(embed: Embed, texts: list[str], repeats: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = embed(texts)
        best = min(best, time.perf_counter() - start)
    return best, out


def spearman(scores: list[float], first: np.ndarray, second: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return 100 * float(spearmanr(scores, (first * second).sum(axis=1)).statistic)


def run(args: argparse.Namespace) -> tuple[list[Row], dict[str, float]]:
    folder = SentenceEncoder.from_pretrained().folder
    tokenizer = SentenceEncoder.from_pretrained().tokenizer
    scores, first, second = read_stsb_test()
    short = short_corpus()
    long = long_corpus(tokenizer.tokenizer)
    if args.quick:  # the same shapes of text, fewer of them
        short, long = first[:100] + second[:100], long[:20]
        scores = scores[:100]
    corpora = {"short": short, "long": long, "mixed": mixed_corpus(short, long)}
    tokens = {
        name: sum(min(n, tokenizer.max_seq_length) for n in tokenizer.encode(texts)[1])
        for name, texts in corpora.items()
    }
    peaks = {"float32": gemm_peak(torch.float32), "bfloat16": gemm_peak(torch.bfloat16)}
    print(
        f"GEMM peak {GEMM_SHAPE}: fp32 {peaks['float32']:.0f} GFLOP/s, bf16 {peaks['bfloat16']:.0f} GFLOP/s",
        file=sys.stderr,
    )

    rows: list[Row] = []
    vectors_of: dict[tuple[str, str], np.ndarray] = {}  # (engine, corpus) -> embeddings, for the min-cosine column
    for engine in engines(folder, args.compile):
        if args.only and not any(s in engine.name for s in args.only):
            continue
        print(f"{engine.name} ...", file=sys.stderr, flush=True)
        with peak_rss_growth() as memory:
            embed = engine.load()
            embed(corpora["mixed"][:64])  # warm-up (and torch.compile's first graphs)
            timed = {name: best_time(embed, texts, args.repeats) for name, texts in corpora.items()}
        del embed
        for name, (seconds, vectors) in timed.items():
            texts = corpora[name]
            row = Row(engine.name, name, len(texts) / seconds, tokens[name] / seconds, memory["mb"], note=engine.note)
            row.roofline = row.tokens_per_s * flops_per_token() / 1e9 / peaks[engine.compute]
            vectors_of[engine.name, name] = vectors
            if name == "short":
                half = len(scores)
                row.spearman = spearman(scores, vectors[:half], vectors[half : 2 * half])
            rows.append(row)
    for row in rows:
        reference = next((r for r in rows if r.engine == REFERENCE and r.corpus == row.corpus), None)
        if reference:
            row.ratio = row.sentences_per_s / reference.sentences_per_s
        fp32 = vectors_of.get((OURS_FP32, row.corpus))
        if fp32 is not None:
            row.min_cos = float((vectors_of[row.engine, row.corpus] * fp32).sum(axis=1).min())
    args.corpora = corpora
    return rows, peaks


OP_GROUPS = {  # profiler op name -> where the time goes
    "matmul": ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul"),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math"),
    "GELU, LayerNorm, adds": ("aten::gelu", "aten::native_layer_norm", "aten::add", "aten::add_"),
    "copies and index ops": (
        "aten::copy_",
        "aten::index_select",
        "aten::index",
        "aten::index_put_",
        "aten::nonzero",
        "aten::embedding",
    ),
}


def profile(corpora: dict[str, list[str]]) -> str:
    """Where our fp32 encode spends its time, per corpus: tokenization, then the torch ops by group."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    encoder = SentenceEncoder.from_pretrained()
    encoder.encode(corpora["mixed"][:64])
    lines = [
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
        self_s: dict[str, float] = {}
        for event in prof.key_averages():
            self_s[event.key] = self_s.get(event.key, 0.0) + event.self_cpu_time_total / 1e6
        shares = [sum(self_s.get(op, 0.0) for op in ops) for ops in OP_GROUPS.values()]
        other = wall - tokenize - sum(shares)
        cells = " | ".join(f"{100 * v / wall:.0f}%" for v in [tokenize, *shares, other])
        lines.append(f"| {name} | {wall:.1f} | {cells} |")
    return "\n".join(lines)


def table(rows: list[Row]) -> str:
    header = (
        "| engine | corpus | sent/s | tokens/s | peak RSS MB | "
        "× ST fp32 | roofline | STS-B ρ×100 | min cos vs fp32 | note |"
    )
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    fmt = lambda v, spec: "–" if v != v else format(v, spec)  # noqa: E731  (NaN -> dash)
    for r in sorted(rows, key=lambda r: ("short", "long", "mixed").index(r.corpus)):
        lines.append(
            f"| {r.engine} | {r.corpus} | {r.sentences_per_s:,.0f} | {r.tokens_per_s:,.0f} | {r.peak_rss_mb:,.0f} | "
            f"{fmt(r.ratio, '.2f')} | {fmt(100 * r.roofline, '.0f')}% | {fmt(r.spearman, '.2f')} | "
            f"{fmt(r.min_cos, '.5f')} | {r.note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="about a minute: 200 short texts, 20 long, one timing each"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timings per engine and corpus, best kept (default 1)"
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on 2 cores)")
    parser.add_argument(
        "--only", nargs="*", help="run only engines whose name contains one of these (the reference always runs)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    parser.add_argument(
        "--profile", action="store_true", help="also profile our fp32 encode: where the time goes, per corpus"
    )
    args = parser.parse_args(argv)
    args.repeats = args.repeats or 1
    if args.only:
        args.only = [*args.only, REFERENCE, OURS_FP32]
    rows, peaks = run(args)
    print(
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"GEMM peak fp32 {peaks['float32']:.0f} GFLOP/s, bf16 {peaks['bfloat16']:.0f} GFLOP/s\n"
    )
    print(table(rows))
    if args.profile:
        print("\nWhere our fp32 time goes (torch.profiler, share of wall time):\n")
        print(profile(args.corpora))
    if args.json:
        Path(args.json).write_text(json.dumps({"gemm_peak_gflops": peaks, "rows": [asdict(r) for r in rows]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
