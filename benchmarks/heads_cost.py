"""What the heads cost on top of the embedding: heads.predict against minilm.embed, the same texts, same run.

    python benchmarks/heads_cost.py                  # the TREC, SST-2 and CoNLL-2003 test sets as raw text
    python benchmarks/heads_cost.py --repeats 3
    python benchmarks/heads_cost.py --model runs/heads   # heads saved by python -m heads.train (default: shipped)

Runs both command lines as a user would, one after the other, --repeats times each (alternating), on one
file of texts: every TREC and SST-2 test sentence and every CoNLL-2003 test sentence joined by spaces
(5,774 texts). minilm.embed writes a .npy; heads.predict writes JSON lines with every head's output
(--with-embedding adds the embedding, a third run). Prints the CPU, the GEMM peak, each command's best
wall time, and the ratio heads.predict / minilm.embed (issue 15 asks for at most 1.3).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import GEMM_SHAPE, cpu_model, gemm_peak

from heads.ner import joined_text
from heads.tasks import read_split
from heads.training import DEFAULT_DATA_DIR


def texts(data_dir: Path) -> list[str]:
    out = [ex.text for task in ("question_type", "sentiment") for ex in read_split(task, "test", data_dir)]
    return out + [joined_text(ex.words)[0] for ex in read_split("ner", "test", data_dir)]


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # stderr: progress bars
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{shlex.join(command)} failed:\n{proc.stderr.decode()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--model", type=Path, help="a folder saved by python -m heads.train (default: weights/heads)")
    args = parser.parse_args()
    corpus = texts(args.data_dir)
    print(
        f"CPU: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"fp32 GEMM peak {GEMM_SHAPE}: {gemm_peak(torch.float32):.0f} GFLOP/s; {len(corpus)} texts"
    )
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "texts.txt"
        source.write_text("".join(t + "\n" for t in corpus), encoding="utf-8")
        python = [sys.executable, "-m"]
        model = ["--model", str(args.model)] if args.model else []
        commands = {
            "minilm.embed": [*python, "minilm.embed", "--input", str(source), "--output", f"{scratch}/v.npy"],
            "heads.predict": [
                *python,
                "heads.predict",
                *model,
                "--input",
                str(source),
                "--output",
                f"{scratch}/p.jsonl",
            ],
            "heads.predict --with-embedding": [
                *python,
                "heads.predict",
                *model,
                "--with-embedding",
                "--input",
                str(source),
                "--output",
                f"{scratch}/e.jsonl",
            ],
        }
        best = dict.fromkeys(commands, float("inf"))
        for _ in range(args.repeats):
            for name, command in commands.items():
                best[name] = min(best[name], timed([*command, "--force"]))
    embed = best["minilm.embed"]
    print("\n| command | best wall time (s) | / minilm.embed |\n|---|---|---|")
    for name, seconds in best.items():
        print(f"| `python -m {name}` | {seconds:.1f} | {seconds / embed:.2f} |")


if __name__ == "__main__":
    main()
