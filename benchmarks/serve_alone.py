"""Our server's parts without HTTP, for serve_load --batcher: what the batching and the model give alone,
so that the server's cells less these are what HTTP and the event loop cost.

- `measure_batcher`: our batcher and packed encoder with N closed-loop single-sentence jobs and no
  HTTP, in a child process set up as the server is (this file run as a script: `batcher_alone`);
- `model_in_rounds`: the model alone on the server's rounds of 32 or 64 sentences against offline
  encode, interleaved in one process.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpora import short_corpus
from load_clients import Cell
from proc_cpu import CLEAN_CORES, ForeignCpu, wait_idle

from minilm import SentenceEncoder

if TYPE_CHECKING:
    from serve_load import Offline

ROOT = Path(__file__).resolve().parent.parent


def batcher_alone(clients: int, seconds: float) -> None:
    """Child process (`python serve_alone.py N SECONDS`): our server's batcher and packed encoder with N closed-loop
    single-sentence jobs and no HTTP, its threads set up as the server sets them. Prints one JSON line:
    the latencies (s) of the jobs answered in the timed window and the other processes' cores. What the
    server would give if its requests cost nothing: the server's cells less these are HTTP's cost."""
    from minilm.serve.batcher import Batcher, Job
    from minilm.serve.tokens import token_ids

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the server: only the worker holds an OpenMP team (batcher.py)
    encoder = SentenceEncoder.from_pretrained().use_packed()
    ids = [token_ids(encoder.tokenizer, [text])[0][0] for text in short_corpus()]  # as the server tokenizes
    batcher = Batcher(encoder, threads=threads)
    window: list[float] = []
    latencies: list[float] = []
    order = itertools.count()

    def submit() -> None:
        job = Job("embed", encodings=[ids[next(order) % len(ids)]])
        batcher.submit(job).add_done_callback(lambda _: answered(job))

    def answered(job: Job) -> None:  # on the worker, as it settles the job: the client sends its next one
        now = time.perf_counter()
        if window and window[0] <= now <= window[0] + seconds:
            latencies.append(now - job.submitted)
        if not window or now < window[0] + seconds:
            submit()

    for _ in range(clients):
        submit()
    time.sleep(3)  # every client answered a few times
    foreign = ForeignCpu()
    window.append(time.perf_counter())
    time.sleep(seconds)
    foreign_cores = foreign.cores()
    batcher.close()
    print(json.dumps({"latencies": latencies, "foreign_cores": foreign_cores}))


def model_in_rounds(offline: Offline, sizes: tuple[int, ...] = (32, 64), repeats: int = 3) -> dict[str, float]:
    """The model alone on the server's rounds: the sentences in their order, N at a time, cut by
    `round_batches` and run by the packed encoder as the worker runs them, against offline encode,
    interleaved in this process; the median of `repeats` passes each. What batching one round of N
    single-sentence requests costs before any thread or HTTP: {"offline": sent/s, "rounds of N": ...}."""
    from minilm.serve.batcher import round_batches
    from minilm.serve.tokens import token_ids

    packed = SentenceEncoder.from_pretrained(str(offline.encoder.folder)).use_packed()
    ids = [token_ids(packed.tokenizer, [text])[0][0] for text in offline.sentences]
    most, budget = packed.batching()  # the worker's defaults

    def rounds(n: int) -> float:
        start = time.perf_counter()
        for at in range(0, len(ids), n):
            chunk = ids[at : at + n]
            for batch in round_batches([len(e.ids) for e in chunk], most, budget):
                encodings = [chunk[k] for k in batch]
                padded = len(encodings) * max(len(e.ids) for e in encodings)  # one call, as the worker makes it
                packed.encode_encodings(encodings, batch_size=len(encodings), max_batch_tokens=padded, normalize=False)
        return len(ids) / (time.perf_counter() - start)

    rates: dict[str, list[float]] = {"offline": []} | {f"rounds of {n}": [] for n in sizes}
    for _ in range(repeats):
        rates["offline"].append(offline.rate())
        for n in sizes:
            rates[f"rounds of {n}"].append(rounds(n))
    found = {name: float(np.median(values)) for name, values in rates.items()}
    print(
        "  model alone: "
        + ", ".join(f"{name} {rate:,.0f} sent/s ({rate / found['offline']:.2f})" for name, rate in found.items()),
        file=sys.stderr,
    )
    return found


def measure_batcher(all_clients: list[int], seconds: float, offline: Offline, retries: int) -> list[Cell]:
    """A "batcher" cell per client count (batcher_alone in a child process), between two offline passes."""
    cells = []
    for clients in all_clients:
        for attempt in range(retries + 1):
            if retries:
                wait_idle()
            before = offline.rate()
            command = [sys.executable, __file__, str(clients), str(seconds)]
            found = json.loads(subprocess.run(command, cwd=ROOT, capture_output=True, check=True).stdout)
            ms = np.array(found["latencies"]) * 1000
            cell = Cell("batcher", clients, 1, len(ms), seconds, float(np.percentile(ms, 50)), 0.0, 0)
            cell.p99_ms, cell.foreign_cores = float(np.percentile(ms, 99)), found["foreign_cores"]
            cell.offline = (before + offline.rate()) / 2
            if cell.foreign_cores < CLEAN_CORES:
                break
            if attempt < retries:
                print(f"  (other processes took {cell.foreign_cores:.2f} cores: again)", file=sys.stderr)
        print(
            f"  batcher alone: {clients:>2} jobs: {cell.sentences_per_s:,.0f} sent/s, p50 {cell.p50_ms:.1f} ms, "
            f"p99 {cell.p99_ms:.1f} ms; other processes {cell.foreign_cores:.2f} cores",
            file=sys.stderr,
        )
        cells.append(cell)
    return cells


if __name__ == "__main__":  # measure_batcher's child
    parser = argparse.ArgumentParser(
        description="serve_load --batcher's child: our batcher and packed encoder with N closed-loop single-sentence "
        "jobs and no HTTP; prints one JSON line (the latencies in the timed window, other processes' cores)"
    )
    parser.add_argument("clients", type=int, help="closed-loop single-sentence jobs")
    parser.add_argument("seconds", type=float, help="the timed window")
    args = parser.parse_args()
    batcher_alone(args.clients, args.seconds)
