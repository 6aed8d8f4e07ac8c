"""Corpus-scale benchmark: embed a million real lines with `python -m minilm.embed`, alone and on Ray.

    .venv/bin/python benchmarks/corpus_scale.py                       # 1,000,000 lines; about 1-2 hours on 2 cores
    .venv/bin/python benchmarks/corpus_scale.py --lines 20000 --precision-lines 5000   # a few minutes

The corpus is every sentence of the shared data sets (STS-B, SST-2, TREC, CoNLL-2003), repeated
with " (line N)" appended so that each line is distinct. Each engine runs as the user would run
it, a fresh `python -m minilm.embed` subprocess:

- single process, float32 shards, on all the lines;
- single process, every --precision (float32 again), on the first --precision-lines lines (the
  encoder's work is the same for every precision; this measures the writer and the size on disk,
  and the table also gives that size scaled to all the lines);
- `--engine ray` on a local Ray cluster of this machine's cores, float32 Parquet, on all the lines.

Memory is the peak growth of the machine's used memory (MemTotal - MemAvailable, sampled every
0.2 s) over what it was before the run, because Ray's workers are not children of the command.
For single-process runs the command's own peak RSS is given too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpora import DATA_DIR, conll_documents, read_stsb_test, require

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = ("float32", "float16", "int8", "uint8", "binary", "ubinary")
PEAK_RSS = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(rc)"
)


def real_sentences(data_dir: Path = DATA_DIR) -> list[str]:
    """Every sentence of STS-B test, SST-2 train/dev/test, TREC train/test and CoNLL-2003, in that order."""
    _, first, second = read_stsb_test(data_dir)
    sentences = first + second
    for split in ("train", "dev", "test"):
        with open(require(data_dir / "sst2" / f"{split}.txt"), encoding="utf-8") as f:
            sentences += [line.split(" ", 1)[1].strip() for line in f if " " in line]
    for split in ("train", "test"):
        with open(require(data_dir / "trec" / f"{split}.txt"), encoding="utf-8") as f:
            sentences += [line.split(" ", 1)[1].strip() for line in f if " " in line]
    sentences += [s for document in conll_documents(data_dir) for s in document]
    return [s for s in sentences if s]


def write_corpus(path: Path, n: int) -> None:
    sentences = real_sentences()
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(f"{sentences[i % len(sentences)]} (line {i + 1})\n")


def used_memory() -> int:
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(fields["MemTotal"].split()[0]) - int(fields["MemAvailable"].split()[0])) * 1024


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_engine(label: str, command: list[str], out: Path, rows: int) -> dict:
    """Run one embedding command to the end; its wall time, memory and output size."""
    shutil.rmtree(out, ignore_errors=True)
    baseline, peak, done = used_memory(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], used_memory() - baseline)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"error: {label} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    own_rss = int(proc.stderr.strip().splitlines()[-1]) * 1024
    result = {
        "engine": label,
        "rows": rows,
        "seconds": round(seconds, 1),
        "texts_per_s": round(rows / seconds, 1),
        "memory_growth_mb": round(peak[0] / 2**20),
        "command_peak_rss_mb": round(own_rss / 2**20),
        "disk_mb": round(folder_bytes(out) / 2**20, 2),
    }
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def markdown(results: list[dict], total_rows: int) -> str:
    lines = [
        "| engine | lines | texts/s | "
        "machine memory growth MB | command peak RSS MB | disk MB | disk MB for all lines |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        scaled = r["disk_mb"] * total_rows / r["rows"]
        rss = "–" if "ray" in r["engine"] else f"{r['command_peak_rss_mb']:,}"
        lines.append(
            f"| {r['engine']} | {r['rows']:,} | {r['texts_per_s']:,.0f} | {r['memory_growth_mb']:,} | "
            f"{rss} | {r['disk_mb']:,.1f} | {scaled:,.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines in the corpus (default 1,000,000)")
    parser.add_argument(
        "--precision-lines", type=int, default=50_000, help="lines for the runs of the other precisions"
    )
    parser.add_argument(
        "--work", type=Path, default=ROOT / "runs" / "corpus_scale", help="scratch folder (corpus and outputs)"
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["local", "precisions", "ray"], help="parts to leave out"
    )
    parser.add_argument(
        "--ray-concurrency", type=int, help="--concurrency for the Ray run (default: Ray's autoscaling)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    corpus, head = args.work / "corpus.txt", args.work / "head.txt"
    write_corpus(corpus, args.lines)
    write_corpus(head, min(args.precision_lines, args.lines))
    print(
        f"corpus: {args.lines:,} lines, {corpus.stat().st_size / 2**20:.1f} MiB; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        file=sys.stderr,
    )
    embed = [sys.executable, "-m", "minilm.embed", "--force"]

    results = []
    if "local" not in args.skip:
        out = args.work / "local_float32"
        results.append(
            run_engine(
                "single process, float32", [*embed, "--input", str(corpus), "--output", f"{out}/"], out, args.lines
            )
        )
    if "precisions" not in args.skip:
        for precision in PRECISIONS:  # float32 again, on the same lines, as the reference for the others
            out = args.work / f"local_{precision}"
            command = [*embed, "--input", str(head), "--output", f"{out}/", "--precision", precision]
            results.append(
                run_engine(f"single process, {precision}", command, out, min(args.precision_lines, args.lines))
            )
    if "ray" not in args.skip:
        out = args.work / "ray_float32"
        command = [*embed, "--engine", "ray", "--input", str(corpus), "--output", f"{out}/"]
        actors = "autoscaled actors"
        if args.ray_concurrency:
            command += ["--concurrency", str(args.ray_concurrency)]
            actors = f"{args.ray_concurrency} actors"
        label = f"Ray Data, local cluster of {os.cpu_count()} CPUs, {actors}, float32 Parquet"
        results.append(run_engine(label, command, out, args.lines))

    table = markdown(results, args.lines)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"lines": args.lines, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
