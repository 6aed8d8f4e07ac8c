"""GPU benchmark: minilm against sentence-transformers in float16 and bfloat16, and float32 parity.

Run on the device machine by benchmarks/gpu_bench.sh; benchmarks/GPU.md has the steps. The device
machine has neither the network nor ../shared, so both inputs are carried files made here:

    python benchmarks/convert_fp16.py                                        # weights/all-MiniLM-L6-v2-fp16/
    python benchmarks/gpu_bench.py --write-corpus gpu_carry/mixed_corpus.txt  # the mixed corpus, one text a line
    python benchmarks/gpu_bench.py --corpus gpu_carry/mixed_corpus.txt        # on a GPU
    python benchmarks/gpu_bench.py --corpus gpu_carry/mixed_corpus.txt --device cpu --n 300   # CPU smoke test

Both libraries load the same float16 checkpoint folder. Each engine, one after the other in this
process: load, embed the first `--parity-n` corpus texts (the warm-up, and the embeddings the checks
compare), then time `encode` on `--n` texts (the corpus cycled), synchronized, with the peak GPU
memory since just before that call. The float32 engines run first: their embeddings must agree to
max |delta| <= 1e-5 (else the exit status is 1), and each half-precision engine reports its minimum
cosine against its own library's float32 embeddings. An engine that fails is reported and the
others still run (exit status 1).

A markdown table goes to stdout; progress to stderr; the JSON result to --out (default
$OUT/gpu_bench.json when $OUT is set), rewritten after every engine so a run cut short keeps what
it measured.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

# The benchmark must never reach for the network: the device machine has none, and waiting on it wastes the lease.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from minilm import SentenceEncoder  # noqa: E402
from minilm.cli import positive_int  # noqa: E402
from minilm.model.packed import PackedEncoder  # noqa: E402
from minilm.weights import WeightsError  # noqa: E402

DEFAULT_FOLDER = REPO / "weights" / "all-MiniLM-L6-v2-fp16"
DEFAULT_CORPUS = REPO / "gpu_carry" / "mixed_corpus.txt"
PARITY_TOLERANCE = 1e-5  # max |delta| between the two float32 engines' normalized embeddings
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
ST = "sentence-transformers"
OURS = "minilm"
# float32 first: its embeddings are the reference for the half-precision rows
ENGINES = [(ST, "float32"), (OURS, "float32"), (ST, "float16"), (OURS, "float16"), (ST, "bfloat16"), (OURS, "bfloat16")]

Embed = Callable[[list[str]], np.ndarray]  # texts -> float32 (N, 384), unit length


class BenchError(Exception):
    """A user-fixable problem; main() prints it as a one-line `error:`."""


@dataclass
class Row:
    library: str
    dtype: str  # asked for
    dtype_run: str  # what ran: minilm falls back to float32 for half precision on CPUs without native support
    attention: str
    load_s: float
    encode_s: float = float("nan")
    sentences_per_s: float = float("nan")
    tokens_per_s: float = float("nan")
    peak_mib: float | None = None  # torch.cuda.max_memory_allocated during the timed encode, weights included
    min_cos_vs_own_fp32: float | None = None  # on the parity texts
    error: str | None = None  # an engine that failed is reported, and the others still run


# --------------------------------------------------------------------------- corpus file


def write_corpus(path: Path, folder: Path) -> int:
    """Write benchmarks/corpora.py's mixed corpus (STS-B test + CoNLL passages, shuffled) one text a line."""
    from corpora import long_corpus, mixed_corpus, short_corpus

    tokenizer = load_ours(folder, "cpu", "float32").tokenizer  # truncation off, as corpora.long_corpus expects
    texts = mixed_corpus(short_corpus(), long_corpus(tokenizer.tokenizer))
    bad = [i for i, text in enumerate(texts) if "\n" in text or "\r" in text]
    if bad:
        raise BenchError(f"corpus text {bad[0]} holds a line break; it cannot be written one text a line")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(text + "\n" for text in texts), encoding="utf-8", newline="")
    os.replace(partial, path)
    return len(texts)


def read_corpus(path: Path) -> list[str]:
    """One text a line, exactly as written (split on '\\n' only, so no other character ends a text)."""
    if not path.is_file():
        raise BenchError(
            f"corpus file {path} is missing; "
            f"build it where ../shared/data is: python benchmarks/gpu_bench.py --write-corpus {path}"
        )
    with open(path, encoding="utf-8", newline="") as f:
        texts = f.read().split("\n")
    if texts and texts[-1] == "":
        texts.pop()
    if not texts:
        raise BenchError(f"corpus file {path} is empty")
    return texts


# --------------------------------------------------------------------------- engines


def require_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise BenchError(
            f"checkpoint folder {folder} is missing; build it here with: python benchmarks/convert_fp16.py"
        )


def load_ours(folder: Path, device: str, dtype: str) -> SentenceEncoder:
    require_folder(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the CPU half-precision fallback; Row.dtype_run records it
        try:
            return SentenceEncoder.from_pretrained(str(folder), device=device, verify=False, dtype=dtype)
        except WeightsError as e:
            raise BenchError(str(e)) from None


def ours_attention(encoder: SentenceEncoder) -> str:
    if not isinstance(encoder.runner, PackedEncoder):
        return "padded SDPA"
    if encoder.device.type == "cuda":
        return "packed, varlen_attn (flash)"
    return "packed, padded SDPA"


def ours_engine(
    folder: Path, device: str, dtype: str, batch_size: int, max_batch_tokens: int | None
) -> tuple[Embed, str, str]:
    """(embed, dtype that runs, attention path) for minilm."""
    encoder = load_ours(folder, device, dtype)

    def embed(texts: list[str]) -> np.ndarray:
        return encoder.encode(texts, batch_size=batch_size, max_batch_tokens=max_batch_tokens, show_progress_bar=False)

    return embed, encoder.dtype, ours_attention(encoder)


def st_engine(folder: Path, device: str, dtype: str, batch_size: int) -> tuple[Embed, str, str]:
    """(embed, dtype that runs, attention implementation) for sentence-transformers.

    The dtype is always passed: transformers 5 loads dtype="auto" by default, which for this
    float16 folder would mean float16 even for the float32 rows.
    """
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        str(folder), device=device, model_kwargs={"dtype": TORCH_DTYPES[dtype]}, local_files_only=True
    )
    dtype_run = str(next(model.parameters()).dtype).removeprefix("torch.")
    attention = getattr(getattr(model[0], "auto_model", None), "config", None)
    attention = getattr(attention, "_attn_implementation", None) or "unknown"

    def embed(texts: list[str]) -> np.ndarray:
        vectors = model.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        )  # modules.json ends in Normalize
        return np.asarray(vectors, dtype=np.float32)

    return embed, dtype_run, attention


# --------------------------------------------------------------------------- measuring


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def free_memory(device: str) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest row-wise cosine of two (N, C) arrays."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = (a64 * b64).sum(1) / np.maximum(np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1), 1e-12)
    return float(cos.min())


def environment(device: str) -> dict[str, object]:
    versions = {}
    for package in ("torch", "sentence-transformers", "transformers", "tokenizers", "safetensors", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401

        varlen = True
    except ImportError:
        varlen = False
    env: dict[str, object] = {
        "python": platform.python_version(),
        "versions": versions,
        "torch_cuda": torch.version.cuda,
        "varlen_attn_importable": varlen,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.device(device).type == "cuda":
        index = torch.device(device).index or 0
        env["device_name"] = torch.cuda.get_device_name(index)
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(index)))
        env["cudnn"] = torch.backends.cudnn.version()
    else:
        env["device_name"] = f"CPU ({platform.processor() or platform.machine()})"
    return env


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_engine(
    library: str, dtype: str, args: argparse.Namespace, texts: list[str], parity_texts: list[str], total_tokens: int
) -> tuple[Row, np.ndarray]:
    """Load one engine, embed the parity texts (also the warm-up), then time `encode` on all texts."""
    cuda = torch.device(args.device).type == "cuda"
    start = time.perf_counter()
    if library == OURS:
        embed, dtype_run, attention = ours_engine(
            args.folder, args.device, dtype, args.batch_size, args.max_batch_tokens
        )
    else:
        embed, dtype_run, attention = st_engine(args.folder, args.device, dtype, args.batch_size)
    synchronize(args.device)
    row = Row(library, dtype, dtype_run, attention, load_s=time.perf_counter() - start)
    reference = embed(parity_texts)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    synchronize(args.device)
    start = time.perf_counter()
    embed(texts)
    synchronize(args.device)
    row.encode_s = time.perf_counter() - start
    row.sentences_per_s = len(texts) / row.encode_s
    row.tokens_per_s = total_tokens / row.encode_s
    if cuda:
        row.peak_mib = torch.cuda.max_memory_allocated() / 2**20
    return row, reference


# --------------------------------------------------------------------------- report


def markdown(rows: list[Row], device_name: str, settings: dict[str, object], parity: dict[str, object] | None) -> str:
    st_speed = {r.dtype: r.sentences_per_s for r in rows if r.library == ST and not r.error}
    lines = [
        f"Device: {device_name}. {settings['n']:,} texts of the mixed corpus, {settings['total_tokens']:,} tokens "
        f"(after truncation to {settings['max_seq_length']}), batch size {settings['batch_size']}.",
        "",
        "| engine | dtype run | attention | load s | encode s | sentences/s | "
        "tokens/s | vs ST same dtype | peak GPU MiB | min cos vs own fp32 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.error:
            lines.append(f"| {r.library} {r.dtype} | failed: {r.error.splitlines()[0][:120]} | | | | | | | | |")
            continue
        ratio = f"{r.sentences_per_s / st_speed[r.dtype]:.2f}x" if r.library == OURS and r.dtype in st_speed else ""
        peak = f"{r.peak_mib:,.0f}" if r.peak_mib is not None else "-"
        cos = f"{r.min_cos_vs_own_fp32:.6f}" if r.min_cos_vs_own_fp32 is not None else "-"
        lines.append(
            f"| {r.library} {r.dtype} | {r.dtype_run} | {r.attention} | {r.load_s:.1f} | {r.encode_s:.2f} | "
            f"{r.sentences_per_s:,.0f} | {r.tokens_per_s:,.0f} | {ratio} | {peak} | {cos} |"
        )
    fallbacks = [f"{r.library} {r.dtype}" for r in rows if r.dtype_run != r.dtype and not r.error]
    if fallbacks:
        lines += [
            "",
            "Ran float32 instead of the dtype asked for (no native half precision on this device): "
            f"{', '.join(fallbacks)}.",
        ]
    if parity is None:
        lines += ["", "float32 parity: not measured (a float32 engine failed): FAIL"]
    else:
        lines += [
            "",
            f"float32 parity, {parity['texts']:,} texts: max |delta| = {parity['max_abs_delta']:.2e} "
            f"(tolerance {PARITY_TOLERANCE:.0e}), min cosine {parity['min_cosine']:.8f}: {parity['result']}",
        ]
    return "\n".join(lines)


def row_json(row: Row) -> dict[str, object]:
    """The row for JSON, with null where a failed engine has no number (NaN is not JSON)."""
    return {
        key: None if isinstance(value, float) and math.isnan(value) else value for key, value in asdict(row).items()
    }


def write_json(path: Path | None, result: dict[str, object]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def benchmark(args: argparse.Namespace) -> int:
    corpus = read_corpus(args.corpus)
    require_folder(args.folder)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise BenchError(
            f"device {args.device!r} asked for but CUDA is not available (torch {torch.__version__}); "
            "use --device cpu for a smoke test"
        )
    try:
        import sentence_transformers  # noqa: F401  (imported now so its import time is not counted as a load time)
    except ImportError as e:
        raise BenchError(
            f"sentence-transformers cannot be imported ({e}); carry it as a wheel, see benchmarks/GPU.md"
        ) from None
    texts = [corpus[i % len(corpus)] for i in range(args.n)]  # the corpus cycled to n texts
    parity_texts = corpus[: min(args.parity_n, len(corpus), args.n)]
    encoder = load_ours(args.folder, "cpu", "float32")
    lengths = [min(n, encoder.max_seq_length) for n in encoder.tokenizer.encode(corpus)[1]]
    total_tokens = sum(lengths[i % len(corpus)] for i in range(args.n))
    max_seq_length = encoder.max_seq_length
    del encoder
    env = environment(args.device)
    log(
        f"{env['device_name']}; {args.n:,} texts ({len(corpus):,} distinct, "
        f"{total_tokens / args.n:.1f} tokens on average); {len(parity_texts):,} parity texts"
    )
    result: dict[str, object] = {
        "device": env["device_name"],
        "environment": env,
        "settings": {
            "n": args.n,
            "distinct_texts": len(corpus),
            "total_tokens": total_tokens,
            "max_seq_length": max_seq_length,
            "parity_texts": len(parity_texts),
            "batch_size": args.batch_size,
            "max_batch_tokens": args.max_batch_tokens,
            "folder": str(args.folder),
            "corpus": str(args.corpus),
        },
        "rows": [],
        "parity": None,
    }
    rows: list[Row] = []
    fp32: dict[str, np.ndarray] = {}
    parity: dict[str, object] | None = None
    for library, dtype in ENGINES:
        log(f"{library} {dtype} ...")
        try:
            row, embeddings = run_engine(library, dtype, args, texts, parity_texts, total_tokens)
        except Exception as e:  # one lease, one try: keep the other engines' numbers
            traceback.print_exc()
            rows.append(Row(library, dtype, "-", "-", load_s=float("nan"), error=f"{type(e).__name__}: {e}"))
            result["rows"] = [row_json(r) for r in rows]
            write_json(args.out, result)
            free_memory(args.device)
            continue
        free_memory(args.device)
        if dtype == "float32":
            fp32[library] = embeddings
        elif library in fp32:
            row.min_cos_vs_own_fp32 = min_cosine(embeddings, fp32[library])
        log(f"{library} {dtype}: {row.sentences_per_s:,.0f} sentences/s ({row.dtype_run}, {row.attention})")
        rows.append(row)
        if parity is None and ST in fp32 and OURS in fp32:
            delta = float(np.abs(fp32[ST] - fp32[OURS]).max())
            parity = {
                "texts": len(parity_texts),
                "max_abs_delta": delta,
                "min_cosine": min_cosine(fp32[ST], fp32[OURS]),
                "tolerance": PARITY_TOLERANCE,
                # must be False for a float32 comparison on a GPU
                "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                "result": "PASS" if delta <= PARITY_TOLERANCE else "FAIL",
            }
            log(f"float32 parity: max |delta| {delta:.2e}: {parity['result']}")
        result["rows"], result["parity"] = [row_json(r) for r in rows], parity
        write_json(args.out, result)
    print(markdown(rows, str(env["device_name"]), result["settings"], parity))
    passed = parity is not None and parity["result"] == "PASS"
    return 0 if passed and not any(r.error for r in rows) else 1


def device_name(value: str) -> str:
    try:
        device = torch.device(value)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a device; use cuda, cuda:N or cpu") from None
    if device.type not in ("cuda", "cpu"):
        raise argparse.ArgumentTypeError(f"{value!r}: only cuda and cpu are supported")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="minilm against sentence-transformers on a GPU: speed in float16/bfloat16, parity in float32."
    )
    parser.add_argument(
        "--folder",
        type=Path,
        default=DEFAULT_FOLDER,
        help="checkpoint folder both sides load (default: the float16 copy from convert_fp16.py)",
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        default=DEFAULT_CORPUS,
        help="text file, one text a line (default gpu_carry/mixed_corpus.txt)",
    )
    parser.add_argument(
        "--write-corpus", type=Path, metavar="FILE", help="write the mixed corpus from ../shared/data to FILE and exit"
    )
    parser.add_argument("--device", type=device_name, default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument(
        "--n", type=positive_int, default=100_000, help="texts per timed run, the corpus cycled (default 100000)"
    )
    parser.add_argument(
        "--parity-n",
        type=positive_int,
        default=2000,
        help="first corpus texts for the parity and cosine checks (default 2000)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=128, help="texts per batch, both libraries (default 128)"
    )
    parser.add_argument(
        "--max-batch-tokens",
        type=positive_int,
        default=None,
        help="minilm only: also cap each batch at this many padded tokens",
    )
    default_out = Path(os.environ["OUT"]) / "gpu_bench.json" if os.environ.get("OUT") else None
    parser.add_argument(
        "--out",
        type=Path,
        default=default_out,
        help="JSON result (default $OUT/gpu_bench.json when $OUT is set, else none)",
    )
    args = parser.parse_args(argv)
    try:
        if args.write_corpus is not None:
            count = write_corpus(args.write_corpus, args.folder)
            size = args.write_corpus.stat().st_size
            print(f"{args.write_corpus}  {count:,} texts, {size:,} bytes ({size / 2**20:.2f} MiB)")
            return 0
        return benchmark(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
