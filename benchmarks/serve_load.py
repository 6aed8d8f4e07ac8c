"""Our server under load, against offline `SentenceEncoder.encode` (the ceiling) and infinity, in one run.

    .venv/bin/python benchmarks/serve_load.py               # about 8 min on 2 cores
    .venv/bin/python benchmarks/serve_load.py --quick       # 3 s per cell, about 5 min
    .venv/bin/python benchmarks/serve_load.py --no-infinity --clients 1,64 --per-request 1   # the targets' cells
    .venv/bin/python benchmarks/serve_load.py --serve-from /tmp/before ...   # another checkout's server, same run
    .venv/bin/python benchmarks/serve_load.py --serve-args "--max-batch-tokens 8192" ...   # our server's options
    bash benchmarks/serve/setup_infinity.sh                 # once: infinity's throwaway venv

Load: closed-loop clients (1, 8, 64), each sending STS-B test sentences to /v1/embeddings (ours)
or /embeddings (infinity, the same OpenAI shape), one sentence per request, then 32 per request;
each client sends its next request as soon as the last is answered. Each cell is timed for
`--seconds` once every client has had its first answer, and reports requests/s, sentences/s and
the p50/p99 latency of the requests answered in that window.

Both servers load the same local all-MiniLM-L6-v2 folder in float32 on the CPU, one at a time.
infinity runs `--engine torch` from benchmarks/serve/.venv (setup_infinity.sh); without that venv it
is skipped, with the reason printed.

The clients (load_clients.py) share the machine's two cores with the server, so they are made as
cheap as they can be: asyncio with hand-written HTTP/1.1 keep-alive requests, not a client library.
Responses are checked for status 200, and the first one of every cell for its vector count.
`--batcher` adds our batcher and model without HTTP (serve_alone.py); the CPU figures come from
/proc (proc_cpu.py).

Each cell is compared with offline encode measured just before and just after it (the mean of the two
passes): this machine's speed drifts by 10-20 % within minutes, idle or not, so a ratio to a ceiling
measured minutes earlier says little. Each cell also reports where our server's CPU went, from /proc:
the event loop's thread per request and every other thread (the model's, the tokenizing pool) per
text; the clients' own CPU per request (they share the two cores with the server); and the CPU that
other processes took meanwhile (`ForeignCpu`): on a shared machine, a cell
run beside someone else's job is not a measurement (one core taken by another process cut 64 clients
from about 290 to 26 requests/s); --retries waits for quiet and redoes such cells.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpora import short_corpus
from load_clients import MODEL, Cell, bodies_for, closed_loop
from machine import RELEVANT_FLAGS, cpu_model, gemm_peak
from proc_cpu import CLEAN_CORES, ForeignCpu, cpu_split, process_cpu, thread_cpu, wait_idle
from serve_alone import measure_batcher, model_in_rounds

from minilm import SentenceEncoder
from minilm.model.precision import cpu_flags

ROOT = Path(__file__).resolve().parent.parent
INFINITY = ROOT / "benchmarks" / "serve" / ".venv" / "bin" / "infinity_emb"
CLIENTS = (1, 8, 64)
PER_REQUEST = (1, 32)


def read_metrics(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
        return response.read().decode()


def answered(page: str, path: str) -> float:
    found = re.search(rf'^minilm_requests_total\{{code="200",endpoint="{path}"\}} (\S+)$', page, re.M)
    return float(found.group(1)) if found else 0.0


def measure(
    name: str,
    port: int,
    path: str,
    sentences: list[str],
    seconds: float,
    ours: bool,
    grid: tuple[list, list],
    pid: int,
    retries: int = 0,
    offline: Offline | None = None,
) -> list[Cell]:
    """Every cell of the grid, each between two offline passes (`offline`: this machine's speed drifts by
    10-20 % within minutes, so a cell is compared with the ceiling of its own moment); with retries, each
    is redone (after an idle moment) while other processes took more than CLEAN_CORES, up to `retries` times."""
    cells = []
    all_clients, all_per_request = grid
    for per_request in all_per_request:
        bodies = bodies_for(sentences, per_request)
        for clients in all_clients:
            for attempt in range(retries + 1):
                if retries:
                    wait_idle(pid)
                before = offline.rate() if offline else float("nan")
                cell = measure_cell(name, port, path, bodies, clients, per_request, seconds, ours, pid)
                cell.offline = (before + offline.rate()) / 2 if offline else float("nan")
                if cell.foreign_cores < CLEAN_CORES:
                    break
                if attempt < retries:
                    print(f"  (other processes took {cell.foreign_cores:.2f} cores: again)", file=sys.stderr)
            cells.append(cell)
    return cells


def measure_cell(
    name: str, port: int, path: str, bodies: list[bytes], clients: int, per_request: int, seconds, ours: bool, pid: int
) -> Cell:
    before, started = read_metrics(port) if ours else "", time.perf_counter()
    cpu_before, foreign, client_before = thread_cpu(pid), ForeignCpu(pid), process_cpu(os.getpid())
    latencies, errors, window = asyncio.run(closed_loop(port, path, bodies, clients, per_request, seconds))
    cpu_after, foreign_cores, client = thread_cpu(pid), foreign.cores(), process_cpu(os.getpid()) - client_before
    if not latencies:
        raise RuntimeError(f"{name}: no request succeeded ({errors} errors) with {clients} clients")
    ms = np.array(latencies) * 1000
    after, ended = read_metrics(port) if ours else "", time.perf_counter()
    requests = answered(after, path) - answered(before, path)
    cpu = cpu_split(pid, cpu_before, cpu_after, requests, requests * per_request) if ours else ()
    cell = Cell(
        name,
        clients,
        per_request,
        len(latencies),
        window,
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 99)),
        errors,
        batch_summary(before, after, ended - started) if ours else "",
        *cpu,
        # the clients' CPU per request: ours, over every request of the cell; infinity, over the window's
        client_ms=1000 * client / max(requests if ours else len(latencies), 1),
        foreign_cores=foreign_cores,
    )
    print(
        f"  {name}: {clients:>2} clients x {per_request:>2} per request: {cell.requests_per_s:,.0f} req/s, "
        f"{cell.sentences_per_s:,.0f} sent/s, p50 {cell.p50_ms:.1f} ms, p99 {cell.p99_ms:.1f} ms {cell.batching}"
        + (
            f"; CPU: event loop {cell.loop_ms:.2f} ms/request, other threads {cell.others_ms:.2f} ms/text, "
            f"clients {cell.client_ms:.2f} ms/request"
            if ours
            else ""
        )
        + f"; other processes {foreign_cores:.2f} cores",
        file=sys.stderr,
    )
    return cell


# ---------------------------------------------------------------------------- the servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, url: str, timeout: float, log) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(
                f"the server exited with {proc.returncode}:\n{log.read().decode(errors='replace')[-3000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} was not healthy after {timeout:.0f} s")


def run_server(
    name: str,
    command: list[str],
    port: int,
    health: str,
    path: str,
    sentences,
    seconds,
    grid,
    env=None,
    cwd=ROOT,
    retries: int = 0,
    offline: Offline | None = None,
) -> tuple[list[Cell], float]:
    """Start a server (in `cwd`), load it, stop it. Returns the cells and its time from start to healthy."""
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        try:
            wait_healthy(proc, f"http://127.0.0.1:{port}{health}", 600, log)
            started = time.perf_counter() - start
            cells = measure(name, port, path, sentences, seconds, name == "minilm", grid, proc.pid, retries, offline)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return cells, started


def batch_summary(before: str, after: str, seconds: float) -> str:
    """Mean requests and texts per encoder pass between two /metrics pages `seconds` apart, and the share of
    that time the model was running (the rest the worker waited for requests; the cell's warm-up and tail
    included)."""

    def read(page: str, name: str) -> float:
        found = re.search(rf'^{name}\{{kind="embed"\}} (\S+)$', page, re.M)
        return float(found.group(1)) if found else 0.0

    batches = read(after, "minilm_batch_requests_count") - read(before, "minilm_batch_requests_count")
    requests = read(after, "minilm_batch_requests_sum") - read(before, "minilm_batch_requests_sum")
    texts = read(after, "minilm_batch_texts_sum") - read(before, "minilm_batch_texts_sum")
    busy = read(after, "minilm_batch_duration_seconds_sum") - read(before, "minilm_batch_duration_seconds_sum")
    if not batches:
        return "no batches"
    return (
        f"{batches:,.0f} encoder passes, {requests / batches:.1f} requests and {texts / batches:.1f} texts per pass, "
        f"the model running {busy / seconds:.0%} of the time"
    )


# ---------------------------------------------------------------------------- main


class Offline:
    """Offline `SentenceEncoder.encode` of the sentences at its defaults, in this process: the ceiling."""

    def __init__(self, folder: Path, sentences: list[str]):
        self.encoder, self.sentences = SentenceEncoder.from_pretrained(str(folder)), sentences
        self.encoder.encode(sentences[:64])

    def rate(self) -> float:
        """Sentences/s of one pass over them all."""
        start = time.perf_counter()
        self.encoder.encode(self.sentences, show_progress_bar=False)
        return len(self.sentences) / (time.perf_counter() - start)


def offline_ceiling(offline: Offline, retries: int = 0) -> tuple[float, float]:
    """encode's sentences/s (the best of two passes), and the other processes' cores meanwhile; redone as
    `measure` redoes a cell."""
    for attempt in range(retries + 1):
        if retries:
            wait_idle()
        foreign = ForeignCpu()
        best = max(offline.rate(), offline.rate())
        if foreign.cores() < CLEAN_CORES:
            break
        if attempt < retries:
            print(f"  (other processes took {foreign.cores():.2f} cores: again)", file=sys.stderr)
    return best, foreign.cores()


def table(cells: list[Cell]) -> str:
    infinity = {(c.clients, c.per_request): c for c in cells if c.server == "infinity"}
    lines = [
        "| server | clients | texts/request | req/s | sent/s | p50 ms | p99 ms | offline sent/s | × offline "
        "| × infinity | errors | loop CPU ms/request | other CPU ms/text | clients' CPU ms/request "
        "| other processes, cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        peer = infinity.get((c.clients, c.per_request))
        vs = f"{c.sentences_per_s / peer.sentences_per_s:.2f}" if peer and c.server != "infinity" else "–"
        lines.append(
            f"| {c.server} | {c.clients} | {c.per_request} | {c.requests_per_s:,.0f} | {c.sentences_per_s:,.0f} | "
            f"{c.p50_ms:.1f} | {c.p99_ms:.1f} | {c.offline:,.0f} | {c.sentences_per_s / c.offline:.2f} | {vs} | "
            f"{c.errors} | "
            + (f"{c.loop_ms:.2f} | {c.others_ms:.2f} | " if c.server == "minilm" else "– | – | ")
            + (f"{c.client_ms:.2f} | " if c.client_ms == c.client_ms else "– | ")
            + f"{c.foreign_cores:.2f} |"
        )
    return "\n".join(lines)


def numbers(text: str) -> list[int]:
    """--clients 1,64 -> [1, 64]"""
    return [int(part) for part in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per cell (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 s per cell")
    parser.add_argument("--no-infinity", action="store_true", help="only our server")
    parser.add_argument("--json", metavar="FILE", help="also write the machine and the cells as JSON")
    parser.add_argument("--clients", type=numbers, default=CLIENTS, help="concurrent clients per cell (default 1,8,64)")
    parser.add_argument("--per-request", type=numbers, default=PER_REQUEST, help="texts per request (default 1,32)")
    parser.add_argument(
        "--serve-from",
        metavar="DIR",
        type=Path,
        default=ROOT,
        help="run our server from this checkout (python -m minilm.serve in DIR), to compare two versions' servers "
        "against the same offline figure on the same machine (default: this checkout)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=0,
        metavar="N",
        help=f"on a shared machine: wait for an idle moment before each measurement, and redo it up to N times "
        f"while other processes took {CLEAN_CORES} core or more during it (default 0: measure once, as it comes)",
    )
    parser.add_argument(
        "--batcher",
        action="store_true",
        help="also run our batcher and encoder alone, without HTTP, with the same single-sentence clients (the "
        "server's cells less these are what HTTP and the event loop cost), and the model alone on rounds of 32 and "
        "64 of the sentences against offline encode (what the rounds' batch size costs)",
    )
    parser.add_argument(
        "--serve-args", default="", metavar="ARGS", help="more options for our server, e.g. '--max-batch-tokens 8192'"
    )
    args = parser.parse_args(argv)
    seconds = 3.0 if args.quick else args.seconds
    grid = (args.clients, args.per_request)
    folder = SentenceEncoder.from_pretrained().folder
    sentences = short_corpus()

    peaks = {name: gemm_peak(dtype) for name, dtype in (("fp32", torch.float32), ("int8", torch.int8))}
    flags = " ".join(flag for flag in RELEVANT_FLAGS if flag in cpu_flags())
    print(f"CPU: {cpu_model()}; flags: {flags}; {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"GEMM peak (4096, 384, 1536): fp32 {peaks['fp32']:.0f} GFLOP/s, int8 {peaks['int8']:.0f} GOP/s")

    ceiling = Offline(folder, sentences)
    offline, offline_foreign = offline_ceiling(ceiling, args.retries)
    print(
        f"offline SentenceEncoder.encode, float32, its default batching: {offline:,.0f} sent/s; other processes "
        f"{offline_foreign:.2f} cores",
        file=sys.stderr,
    )
    cells: list[Cell] = []
    port = free_port()
    # by name, so that responses say all-MiniLM-L6-v2; it resolves to `folder`, the files infinity loads
    ours_command = [sys.executable, "-m", "minilm.serve", "--port", str(port), "--model", MODEL, "--no-heads"]
    ours_command += shlex.split(args.serve_args)
    if args.serve_from != ROOT or args.serve_args:
        print(f"our server: {' '.join(ours_command[1:5])} ... {args.serve_args}, from {args.serve_from}")
    ours, ours_start = run_server(
        "minilm",
        ours_command,
        port,
        "/health",
        "/v1/embeddings",
        sentences,
        seconds,
        grid,
        {"HF_HUB_OFFLINE": "1"},
        args.serve_from,
        args.retries,
        ceiling,
    )
    cells += ours
    in_rounds = {}
    if args.batcher:
        cells += measure_batcher(args.clients, seconds, ceiling, args.retries)
        in_rounds = model_in_rounds(ceiling)
    skipped = ""
    infinity_start = float("nan")
    if args.no_infinity:
        skipped = "infinity: skipped (--no-infinity)"
    elif not INFINITY.exists():
        skipped = f"infinity: skipped ({INFINITY} is missing; run bash benchmarks/serve/setup_infinity.sh)"
    else:
        port = free_port()
        command = [str(INFINITY), "v2", "--model-id", str(folder), "--served-model-name", MODEL, "--engine", "torch"]
        command += ["--device", "cpu", "--port", str(port)]
        found, infinity_start = run_server(
            "infinity",
            command,
            port,
            "/health",
            "/embeddings",
            sentences,
            seconds,
            grid,
            {"HF_HUB_OFFLINE": "1"},
            retries=args.retries,
            offline=ceiling,
        )
        cells += found
    print()
    print(
        f"offline SentenceEncoder.encode (the ceiling): {offline:,.0f} sent/s "
        f"(other processes {offline_foreign:.2f} cores)"
    )
    print(f"start to healthy: minilm {ours_start:.1f} s, infinity {infinity_start:.1f} s")
    print(table(cells))
    if in_rounds:
        print(
            "model alone on the server's rounds (packed, round_batches; median of 3, interleaved with offline): "
            + ", ".join(f"{name} {rate:,.0f} sent/s" for name, rate in in_rounds.items())
        )
    if skipped:
        print(skipped)
    ours_64 = next((c for c in cells if c.server == "minilm" and c.clients == 64 and c.per_request == 1), None)
    peer_64 = next((c for c in cells if c.server == "infinity" and c.clients == 64 and c.per_request == 1), None)
    ours_1 = next((c for c in cells if c.server == "minilm" and c.clients == 1 and c.per_request == 1), None)
    print("\nTargets (64 single-sentence clients; 1 client):")
    if ours_64:
        print(f"minilm /metrics during the 64 single-sentence clients: {ours_64.batching}")
        print(
            f"- throughput {ours_64.sentences_per_s / ours_64.offline:.0%} of offline encode around the cell "
            f"({ours_64.offline:,.0f} sent/s) (target >= 85%)"
        )
    if ours_64 and peer_64:
        print(f"- {ours_64.sentences_per_s / peer_64.sentences_per_s:.2f}x infinity (target >= 1.5x)")
        print(f"- p99 {ours_64.p99_ms:.1f} ms against infinity's {peer_64.p99_ms:.1f} ms (target: no worse)")
    if ours_1:
        print(f"- 1 client, one sentence: p50 {ours_1.p50_ms:.1f} ms (target <= 15 ms)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "cpu": cpu_model(),
                    "flags": flags,
                    "gemm_peaks": peaks,
                    "offline": offline,
                    "offline_foreign_cores": offline_foreign,
                    "ours": {"from": str(args.serve_from), "args": args.serve_args},
                    "cells": [asdict(c) for c in cells],
                    "model_in_rounds": in_rounds,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
