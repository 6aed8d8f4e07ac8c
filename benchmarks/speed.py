"""CPU inference speed: every engine on the same real corpora, each in a fresh process of its own.

    python benchmarks/speed.py            # full run (roughly 20-30 min on 2 cores, the batch sweep included)
    python benchmarks/speed.py --quick    # 5-8 min: small slices of each corpus, one timing each
    bash benchmarks/peers/setup.sh        # once, to add the peers (sentence-transformers' fast backends)

Engines:
- sentence-transformers fp32 (torch, batch 32): the reference every ratio is against; and the
  same under bf16 autocast.
- onnxruntime fp32: our fp32 encoder exported with torch.onnx, run by ONNX Runtime, with our
  tokenizer, batching and pooling.
- ours in every mode: fp32 (the default, and the reference of the min-cosine column), fp32 with
  max_batch_tokens=2048, --dtype bfloat16, int8, int8 --fuse (minilm.model.fused) and auto (the
  note says what auto picked), float16 where it is native here, and bf16 forced into emulation
  where the CPU would fall back (to show why it does). --compile adds fp32, bf16 and int8 under torch.compile.
- the peers, where benchmarks/peers/.venv exists: sentence-transformers' own ONNX backend in fp32
  and dynamically quantized to int8 (the avx512_vnni config where the CPU has it, else avx2), its
  OpenVINO backend as exported, and OpenVINO statically quantized to int8 by NNCF, calibrated on
  300 STS-B dev sentences (export_static_quantized_openvino_model's recipe, with the calibration
  set built locally; its load s includes the calibration). Their versions differ from the
  project's, so they live in that throwaway venv (benchmarks/peers/setup.sh makes it); without it
  they are skipped, and the output says so.

Batch sizes: every engine runs at its default batch (sentence-transformers' 32, ONNX Runtime's 32
here, and for ours encode's own choice: no batch argument is passed) for every corpus, and then
once more on the short corpus at each batch size of --sweep (default 32 to 1024; --quick: 32 and
128), where ours is given batch_size alone (the max_batch_tokens=2048 row keeps its cap). A
second table shows the whole sweep per engine, with the slowest size's share of the best (a
batch-size cliff shows there). The emulated-bf16 row is not swept: it is there to show the
fallback, and each of its encodes takes minutes.

Isolation: this process reads the corpora (benchmarks/corpora.py: short = the 2,758 STS-B test
sentences, long = 1,000 CoNLL-2003 passages of 128-256 tokens, mixed = both, shuffled), measures
the GEMM peaks and writes the corpora to a temporary JSON file. Then it starts
benchmarks/speed_worker.py once per engine, one after the other, each in a new process (the
peers with the peers' venv's python), so that no runtime's idle threads, caches or memory
outlive it. The worker loads the engine, warms it up on 64 mixed texts, times each corpus and
hands back its timings and embeddings; the quality columns are computed here. A worker that
fails stops the run with its stderr.

Columns: sentences/s at the default batch and tokens/s (best of --repeats); the best batch of the
sweep, short corpus only, as its sentences/s and (its size); peak RSS MB, the worker process's own
peak resident memory (Python, the libraries, the engine and its buffers: one engine per
process); load s, the time from the start of loading (the engine library's import and any
export or quantization included) to the end of the warm-up, which for torch.compile is the
compile time; the ratio against sentence-transformers fp32 on the same corpus; the share of the
roofline: tokens/s x 21.2 MFLOP (the encoder's matmul FLOPs per token) over the GEMM peak
measured at the start of this run in the dtype the engine multiplies in (int8 engines: the int8
peak, in GOP/s; OpenVINO picks its own precision, so its row uses the one it reports compiling
for, bf16 on a CPU with AVX512-BF16, and fp32 where it reports none). Quality: STS-B test
Spearman x 100 (short corpus) and the minimum cosine to our fp32 embeddings of the same texts.

Prints the CPU, its relevant feature flags, the peaks, the markdown table and the sweep's table;
--json also writes the numbers. --profile adds where our fp32, int8 and bfloat16 encodes spend their time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpora import long_corpus, mixed_corpus, read_stsb_test, short_corpus
from machine import GEMM_SHAPE, RELEVANT_FLAGS, flops_per_token, gemm_peak, machine, native
from speed_profile import profile
from speed_worker import batch_sizes

from minilm import SentenceEncoder
from minilm.model.precision import cpu_flags
from minilm.text.tokenization import SentenceTokenizer

BENCHMARKS = Path(__file__).resolve().parent
WORKER = BENCHMARKS / "speed_worker.py"
PEERS_PYTHON = BENCHMARKS / "peers" / ".venv" / "bin" / "python"
PEERS_SKIPPED = "peers skipped: benchmarks/peers/.venv is missing (bash benchmarks/peers/setup.sh installs them)"

REFERENCE = "sentence-transformers fp32"
OURS_FP32 = "ours fp32 (default)"  # the min-cosine column compares every engine with this one
STDERR_TAIL = 3000  # characters of a failed worker's stderr to show
SWEEP = (32, 64, 128, 256, 512, 1024)  # batch sizes timed on the short corpus
QUICK_SWEEP = (32, 128)  # --quick's short corpus is 200 texts: larger sizes would all be one batch
CALIBRATION_SENTENCES = 300  # OpenVINO static int8's STS-B dev calibration set, as issue 31 measured


# ---------------------------------------------------------------------------- engines


@dataclass
class Engine:
    """One row of the table: what speed_worker.py is asked to run, and with which python."""

    name: str
    worker_args: list[str]  # speed_worker.py's engine and options
    python: str = sys.executable
    swept: bool = True  # timed at each --sweep batch size too


def ours(name: str, *options: str) -> Engine:
    return Engine(name, ["ours", *options])


def int8_quantize_config() -> str:
    """sentence-transformers' dynamic-quantization config for this CPU: VNNI's where it has it."""
    return "avx512_vnni" if "avx512_vnni" in cpu_flags() else "avx2"


def peer(name: str, *options: str) -> Engine:
    """A sentence-transformers backend run by the peers' venv's python (its own package versions)."""
    return Engine(name, ["sentence-transformers", *options], str(PEERS_PYTHON))


def engines(compile_too: bool, with_peers: bool) -> list[Engine]:
    listed = [
        Engine(REFERENCE, ["sentence-transformers"]),
        Engine("sentence-transformers bf16 autocast", ["sentence-transformers", "--autocast"]),
        Engine("onnxruntime fp32", ["onnxruntime"]),
        ours(OURS_FP32),
        ours("ours fp32 max_batch_tokens=2048", "--batch-size", "256", "--max-batch-tokens", "2048"),
        ours("ours --dtype bfloat16", "--dtype", "bfloat16"),
        ours("ours --dtype int8", "--dtype", "int8"),
        ours("ours --dtype int8 --fuse", "--dtype", "int8", "--fuse"),
        ours("ours --dtype auto", "--dtype", "auto"),
    ]
    if native("float16"):  # where float16 falls back it is the float32 row again
        listed.append(ours("ours --dtype float16", "--dtype", "float16"))
    if not native("bfloat16"):  # show what the fallback avoids; minutes per encode, so not swept
        listed.append(Engine("ours bf16 forced (emulated)", ["ours", "--dtype", "bfloat16", "--forced"], swept=False))
    if compile_too:
        listed.append(ours("ours fp32 torch.compile", "--compile"))
        for dtype, short in (("bfloat16", "bf16"), ("int8", "int8")):
            if native(dtype):  # a fallback would compile the fp32 row again
                listed.append(ours(f"ours {short} torch.compile", "--dtype", dtype, "--compile"))
    if with_peers:
        config = int8_quantize_config()
        listed += [
            peer("sentence-transformers onnx fp32", "--backend", "onnx"),
            peer(f"sentence-transformers onnx int8 ({config})", "--backend", "onnx", "--quantize", config),
            peer("sentence-transformers openvino", "--backend", "openvino"),
            peer(
                f"sentence-transformers openvino static int8 (NNCF, {CALIBRATION_SENTENCES} STS-B dev)",
                "--backend",
                "openvino",
                "--static-int8",
                str(CALIBRATION_SENTENCES),
            ),
        ]
    return listed


class WorkerFailed(RuntimeError):
    """A worker exited non-zero; the message holds the tail of its stderr."""


def run_worker(
    engine: Engine, folder: Path, corpora_file: Path, out: Path, repeats: int, sweep: tuple[int, ...] = ()
) -> dict:
    """Runs one engine in its own process, timed at each of `sweep`'s batch sizes too where it is swept;
    returns its result.json plus its vectors by corpus.

    Its stdout and stderr go to files beside its results: the libraries are chatty, and the tail
    of stderr is what a failure shows.
    """
    out.mkdir(parents=True)
    command = [engine.python, str(WORKER), *engine.worker_args]
    command += ["--model", str(folder), "--corpora", str(corpora_file), "--out", str(out), "--repeats", str(repeats)]
    if engine.swept and sweep:
        command += ["--sweep", ",".join(map(str, sweep))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # never the network
    with open(out / "stdout.txt", "w") as stdout, open(out / "stderr.txt", "w") as stderr:
        returncode = subprocess.run(command, stdout=stdout, stderr=stderr, env=env, cwd=BENCHMARKS.parent).returncode
    if returncode != 0:
        tail = (out / "stderr.txt").read_text(errors="replace")[-STDERR_TAIL:]
        raise WorkerFailed(f"error: the worker for {engine.name!r} exited with {returncode}; its stderr ends:\n{tail}")
    result = json.loads((out / "result.json").read_text())
    result["sweep"] = {int(size): seconds for size, seconds in result["sweep"].items()}  # JSON keys are strings
    result["vectors"] = {name: np.load(out / f"{name}.npy") for name in result["seconds"]}
    return result


# ---------------------------------------------------------------------------- measuring


@dataclass
class Row:
    engine: str
    corpus: str
    sentences_per_s: float  # at the engine's default batch
    tokens_per_s: float
    peak_rss_mb: float  # the worker process's peak RSS
    load_s: float  # load (imports, export, quantization, compile) plus warm-up
    compute: str  # the dtype the matmuls ran in: picks the roofline's peak
    rss_growth_mb: float = float("nan")  # peak RSS growth from before the engine's load to the end
    ratio: float = float("nan")  # against sentence-transformers fp32 on the same corpus
    roofline: float = float("nan")  # share of the GEMM peak
    spearman: float = float("nan")  # STS-B test x 100, short corpus only
    min_cos: float = float("nan")  # against ours fp32 on the same texts
    note: str = ""
    sweep: dict[int, float] = field(default_factory=dict)  # batch size -> sentences/s, short corpus only
    best_batch: int | None = None  # the sweep's fastest size, short corpus only

    @property
    def best_sentences_per_s(self) -> float:
        return self.sweep[self.best_batch] if self.best_batch else float("nan")


@dataclass
class Run:
    rows: list[Row]
    peaks: dict[str, float]  # dtype -> GFLOP/s (int8: GOP/s)
    corpora: dict[str, list[str]]
    skipped: list[str] = field(default_factory=list)  # one line per group of engines left out


def spearman(scores: list[float], first: np.ndarray, second: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return 100 * float(spearmanr(scores, (first * second).sum(axis=1)).statistic)


def read_corpora(tokenizer: SentenceTokenizer, quick: bool) -> tuple[dict[str, list[str]], list[float]]:
    """(corpus name -> texts, the STS-B gold scores of the first len(scores) short pairs)."""
    scores, first, second = read_stsb_test()
    short = short_corpus()
    long = long_corpus(tokenizer.tokenizer)
    if quick:  # the same shapes of text, fewer of them
        short, long = first[:100] + second[:100], long[:20]
        scores = scores[:100]
    return {"short": short, "long": long, "mixed": mixed_corpus(short, long)}, scores


def run(args: argparse.Namespace) -> Run:
    encoder = SentenceEncoder.from_pretrained()  # the checkpoint folder every worker loads, and the tokenizer
    tokenizer = encoder.tokenizer
    corpora, scores = read_corpora(tokenizer, args.quick)
    tokens = {
        name: sum(min(n, tokenizer.max_seq_length) for n in tokenizer.encode(texts)[1])
        for name, texts in corpora.items()
    }
    peaks = {name: gemm_peak(dtype) for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))}
    peaks["int8"] = gemm_peak(torch.int8)
    skipped = []
    with_peers = PEERS_PYTHON.is_file()
    if not with_peers:
        print(PEERS_SKIPPED, file=sys.stderr)
        skipped.append(PEERS_SKIPPED)

    rows: list[Row] = []
    vectors_of: dict[tuple[str, str], np.ndarray] = {}  # (engine, corpus) -> embeddings, for the min-cosine column
    with tempfile.TemporaryDirectory(prefix="minilm-speed-") as work:
        corpora_file = Path(work) / "corpora.json"
        corpora_file.write_text(json.dumps(corpora), encoding="utf-8")
        for i, engine in enumerate(engines(args.compile, with_peers)):
            if args.only and not any(s in engine.name for s in args.only):
                continue
            print(f"{engine.name} ...", end="", file=sys.stderr, flush=True)
            start = time.perf_counter()
            result = run_worker(
                engine, encoder.folder, corpora_file, Path(work) / f"engine{i}", args.repeats, args.sweep
            )
            print(f" {time.perf_counter() - start:.0f} s", file=sys.stderr)
            for name, seconds in result["seconds"].items():
                row = Row(
                    engine.name,
                    name,
                    len(corpora[name]) / seconds,
                    tokens[name] / seconds,
                    result["peak_rss_mb"],
                    result["load_s"],
                    result["compute"],
                    result["rss_growth_mb"],
                    note=result["note"],
                )
                if row.compute not in peaks:  # float16, where it is native (see engines)
                    peaks[row.compute] = gemm_peak(getattr(torch, row.compute))
                row.roofline = row.tokens_per_s * flops_per_token() / 1e9 / peaks[row.compute]
                vectors = vectors_of[engine.name, name] = result["vectors"][name]
                if name == "short":
                    half = len(scores)
                    row.spearman = spearman(scores, vectors[:half], vectors[half : 2 * half])
                    row.sweep = {size: len(corpora[name]) / s for size, s in result["sweep"].items()}
                    row.best_batch = max(row.sweep, key=row.sweep.get, default=None)
                rows.append(row)
    for row in rows:
        reference = next((r for r in rows if r.engine == REFERENCE and r.corpus == row.corpus), None)
        if reference:
            row.ratio = row.sentences_per_s / reference.sentences_per_s
        fp32 = vectors_of.get((OURS_FP32, row.corpus))
        if fp32 is not None:
            row.min_cos = float((vectors_of[row.engine, row.corpus] * fp32).sum(axis=1).min())
    return Run(rows, peaks, corpora, skipped)


# ---------------------------------------------------------------------------- output

COLUMNS = (
    "engine",
    "corpus",
    "sent/s (default)",
    "best batch: sent/s (size)",
    "tokens/s",
    "peak RSS MB",
    "load s",
    "× ST fp32",
    "roofline",
    "STS-B ρ×100",
    "min cos vs fp32",
    "note",
)


def fmt(value: float, spec: str) -> str:
    """`value` formatted, or a dash for NaN (a column that does not apply to the row)."""
    return "–" if value != value else format(value, spec)


def best_batch_cell(row: Row) -> str:
    """The sweep's best sentences/s and its batch size, as "1,234 (256)"; a dash where the row was not swept."""
    return f"{row.best_sentences_per_s:,.0f} ({row.best_batch})" if row.best_batch else "–"


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---|" + "---:|" * (len(COLUMNS) - 3) + "---|"]
    for r in sorted(rows, key=lambda r: ("short", "long", "mixed").index(r.corpus)):
        lines.append(
            f"| {r.engine} | {r.corpus} | {r.sentences_per_s:,.0f} | {best_batch_cell(r)} | {r.tokens_per_s:,.0f} | "
            f"{r.peak_rss_mb:,.0f} | "
            f"{r.load_s:.1f} | {fmt(r.ratio, '.2f')} | {fmt(100 * r.roofline, '.0f')}% | {fmt(r.spearman, '.2f')} | "
            f"{fmt(r.min_cos, '.5f')} | {r.note} |"
        )
    return "\n".join(lines)


def sweep_table(rows: list[Row]) -> str:
    """The sweep, engine x batch size -> sentences/s on the short corpus, and the slowest size's share of
    the fastest ("no batch-size cliff" reads off that column). Rows that were not swept are left out."""
    swept = [r for r in rows if r.corpus == "short" and r.sweep]
    sizes = sorted({size for r in swept for size in r.sweep})
    lines = [
        "| engine (short corpus, sent/s) | " + " | ".join(map(str, sizes)) + " | slowest ÷ best |",
        "|---|" + "---:|" * (len(sizes) + 1),
    ]
    for r in swept:
        cells = [
            f"**{r.sweep[s]:,.0f}**" if s == r.best_batch else fmt(r.sweep.get(s, float("nan")), ",.0f") for s in sizes
        ]
        lines.append(
            f"| {r.engine} | " + " | ".join(cells) + f" | {min(r.sweep.values()) / r.best_sentences_per_s:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Each engine runs in its own process (benchmarks/speed_worker.py); the peers need "
        "benchmarks/peers/.venv (bash benchmarks/peers/setup.sh) and are skipped, with a note, without it.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="5-8 minutes: 200 short texts, 20 long, one timing each; every engine"
    )
    parser.add_argument("--repeats", type=int, default=1, help="timings per engine and corpus, best kept (default 1)")
    parser.add_argument(
        "--compile", action="store_true", help="also time fp32, bf16 and int8 under torch.compile (slow on 2 cores)"
    )
    parser.add_argument(
        "--only", nargs="*", help="run only engines whose name contains one of these (the reference always runs)"
    )
    parser.add_argument(
        "--sweep",
        type=batch_sizes,
        metavar="SIZES",
        help="comma-separated batch sizes to time every engine at on the short corpus, once each "
        f"(default {','.join(map(str, SWEEP))}; --quick: {','.join(map(str, QUICK_SWEEP))}; '' for none)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the machine and the rows as JSON")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile our fp32, int8 and bfloat16 encodes: where the time goes, per corpus",
    )
    args = parser.parse_args(argv)
    if args.sweep is None:
        args.sweep = QUICK_SWEEP if args.quick else SWEEP
    if args.only:
        args.only = [*args.only, REFERENCE, OURS_FP32]
    try:
        result = run(args)
    except WorkerFailed as failure:
        print(f" failed\n{failure}", file=sys.stderr)  # ends the "engine ..." progress line
        return 1
    about = machine(result.peaks)
    peaks = result.peaks
    print(f"CPU: {about['cpu']}; flags: {' '.join(about['cpu_flags']) or 'none of ' + ', '.join(RELEVANT_FLAGS)}")
    print(
        f"{about['threads']} threads, torch {about['torch']}; GEMM peak {GEMM_SHAPE}: fp32 {peaks['float32']:.0f} "
        f"GFLOP/s, bf16 {peaks['bfloat16']:.0f} GFLOP/s"
        + (f", fp16 {peaks['float16']:.0f} GFLOP/s" if "float16" in peaks else "")
        + f", int8 {peaks['int8']:.0f} GOP/s\n"
    )
    print(table(result.rows))
    if any(r.sweep for r in result.rows):
        print("\nBatch-size sweep, one timing per size (bold: the best):\n")
        print(sweep_table(result.rows))
    for line in result.skipped:
        print(f"\n{line}")
    if args.profile:
        for dtype in ("float32", "int8", "bfloat16"):
            print()
            print(profile(result.corpora, dtype))
    if args.json:
        rows = [{**asdict(r), "best_sentences_per_s": r.best_sentences_per_s} for r in result.rows]
        data = {**about, "skipped": result.skipped, "rows": rows}
        Path(args.json).write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
