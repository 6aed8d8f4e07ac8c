"""Our server under load, against offline `SentenceEncoder.encode` (the ceiling) and infinity, in one run.

    .venv/bin/python benchmarks/serve_load.py               # about 5 min on 2 cores
    .venv/bin/python benchmarks/serve_load.py --quick       # 3 s per cell, about 2 min
    bash benchmarks/serve/setup_infinity.sh                 # once: infinity's throwaway venv

Load: closed-loop clients (1, 8, 64), each sending STS-B test sentences to /v1/embeddings (ours)
or /embeddings (infinity, the same OpenAI shape), one sentence per request, then 32 per request;
each client sends its next request as soon as the last is answered. Each cell is timed for
`--seconds` once every client has had its first answer, and reports requests/s, sentences/s and
the p50/p99 latency of the requests answered in that window.

Both servers load the same local all-MiniLM-L6-v2 folder in float32 on the CPU, one at a time.
infinity runs `--engine torch` from benchmarks/serve/.venv (setup_infinity.sh); without that venv it
is skipped, with the reason printed.

The client shares the machine's two cores with the server, so it is made as cheap as it can be:
asyncio with hand-written HTTP/1.1 keep-alive requests (about 30 µs each), not a client library
(httpx costs about ten times that per request, which would come out of the server's share).
Responses are checked for status 200, and the first one of every cell for its vector count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpora import short_corpus
from speed import RELEVANT_FLAGS, cpu_model, gemm_peak

from minilm import SentenceEncoder
from minilm.model.precision import cpu_flags

ROOT = Path(__file__).resolve().parent.parent
INFINITY = ROOT / "benchmarks" / "serve" / ".venv" / "bin" / "infinity_emb"
MODEL = "all-MiniLM-L6-v2"
CLIENTS = (1, 8, 64)
PER_REQUEST = (1, 32)


# ---------------------------------------------------------------------------- the load generator


class Connection:
    """One keep-alive HTTP/1.1 connection: POST a JSON body, read the status and the body."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        assert self.reader is not None
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            chunks = []
            while size := int((await self.reader.readline()).strip(), 16):
                chunks.append(await self.reader.readexactly(size))
                await self.reader.readline()
            await self.reader.readline()
            payload = b"".join(chunks)
        else:
            payload = await self.reader.readexactly(int(headers.get("content-length", 0)))
        if headers.get("connection") == "close":
            self.writer.close()
            self.writer = None
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Cell:
    server: str
    clients: int
    per_request: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    batching: str = ""  # ours: what /metrics said about the encoder passes during this cell

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def sentences_per_s(self) -> float:
        return self.requests * self.per_request / self.seconds


async def closed_loop(
    port: int, path: str, bodies: list[bytes], clients: int, per_request: int, seconds: float
) -> tuple[list[float], int, float]:
    """`clients` loops, each sending the next body as soon as its last answer came.

    Each client's first request is a warm-up; the timed window opens when every client has had its
    first answer (the server is then in its steady state, whatever its latency) and lasts `seconds`.
    Returns the latencies (s) of the requests answered inside the window, the error count, and the
    window's length, so throughput = len(latencies) / window."""
    latencies: list[float] = []
    errors = 0
    warmed = 0
    opened: list[float] = []  # the window's start, once every client is warm
    checked = False

    async def client(k: int) -> None:
        nonlocal errors, checked, warmed
        connection = Connection("127.0.0.1", port)
        i, first = k, True
        try:
            while not opened or time.perf_counter() < opened[0] + seconds:
                sent = time.perf_counter()
                status, payload = await connection.post(path, bodies[i % len(bodies)])
                done = time.perf_counter()
                i += clients
                if status != 200:
                    errors += 1
                    if errors == 1:
                        print(f"  first error: {status} {payload[:300]!r}", file=sys.stderr)
                elif not checked:
                    checked = True
                    assert len(json.loads(payload)["data"]) == per_request, payload[:200]
                if first:
                    first, warmed = False, warmed + 1
                    if warmed == clients:
                        opened.append(done)
                elif status == 200 and opened and opened[0] <= done <= opened[0] + seconds:
                    latencies.append(done - sent)
        finally:
            connection.close()

    await asyncio.gather(*(client(k) for k in range(clients)))
    return latencies, errors, seconds


def bodies_for(sentences: list[str], per_request: int) -> list[bytes]:
    groups = [sentences[i : i + per_request] for i in range(0, len(sentences) - per_request + 1, per_request)]
    return [json.dumps({"model": MODEL, "input": group[0] if per_request == 1 else group}).encode() for group in groups]


def read_metrics(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
        return response.read().decode()


def measure(name: str, port: int, path: str, sentences: list[str], seconds: float, ours: bool) -> list[Cell]:
    cells = []
    for per_request in PER_REQUEST:
        bodies = bodies_for(sentences, per_request)
        for clients in CLIENTS:
            before = read_metrics(port) if ours else ""
            latencies, errors, window = asyncio.run(closed_loop(port, path, bodies, clients, per_request, seconds))
            if not latencies:
                raise RuntimeError(f"{name}: no request succeeded ({errors} errors) with {clients} clients")
            ms = np.array(latencies) * 1000
            cell = Cell(
                name,
                clients,
                per_request,
                len(latencies),
                window,
                float(np.percentile(ms, 50)),
                float(np.percentile(ms, 99)),
                errors,
                batch_summary(before, read_metrics(port)) if ours else "",
            )
            print(
                f"  {name}: {clients:>2} clients x {per_request:>2} per request: {cell.requests_per_s:,.0f} req/s, "
                f"{cell.sentences_per_s:,.0f} sent/s, p50 {cell.p50_ms:.1f} ms, p99 {cell.p99_ms:.1f} ms "
                f"{cell.batching}",
                file=sys.stderr,
            )
            cells.append(cell)
    return cells


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
    name: str, command: list[str], port: int, health: str, path: str, sentences, seconds, env=None
) -> tuple[list[Cell], float]:
    """Start a server, load it, stop it. Returns the cells and its time from start to healthy."""
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        try:
            wait_healthy(proc, f"http://127.0.0.1:{port}{health}", 600, log)
            started = time.perf_counter() - start
            cells = measure(name, port, path, sentences, seconds, ours=name == "minilm")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return cells, started


def batch_summary(before: str, after: str) -> str:
    """Mean requests and texts per encoder pass between two /metrics pages."""

    def read(page: str, name: str) -> float:
        found = re.search(rf'^{name}\{{kind="embed"\}} (\S+)$', page, re.M)
        return float(found.group(1)) if found else 0.0

    batches = read(after, "minilm_batch_requests_count") - read(before, "minilm_batch_requests_count")
    requests = read(after, "minilm_batch_requests_sum") - read(before, "minilm_batch_requests_sum")
    texts = read(after, "minilm_batch_texts_sum") - read(before, "minilm_batch_texts_sum")
    if not batches:
        return "no batches"
    return f"{batches:,.0f} encoder passes, {requests / batches:.1f} requests and {texts / batches:.1f} texts per pass"


# ---------------------------------------------------------------------------- main


def offline_ceiling(folder: Path, sentences: list[str]) -> float:
    encoder = SentenceEncoder.from_pretrained(str(folder))
    encoder.encode(sentences[:64])
    best = 0.0
    for _ in range(2):
        start = time.perf_counter()
        encoder.encode(sentences, show_progress_bar=False)
        best = max(best, len(sentences) / (time.perf_counter() - start))
    return best


def table(cells: list[Cell], offline: float) -> str:
    infinity = {(c.clients, c.per_request): c for c in cells if c.server == "infinity"}
    lines = [
        "| server | clients | texts/request | req/s | sent/s | p50 ms | p99 ms | × offline | × infinity | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        peer = infinity.get((c.clients, c.per_request))
        vs = f"{c.sentences_per_s / peer.sentences_per_s:.2f}" if peer and c.server != "infinity" else "–"
        lines.append(
            f"| {c.server} | {c.clients} | {c.per_request} | {c.requests_per_s:,.0f} | {c.sentences_per_s:,.0f} | "
            f"{c.p50_ms:.1f} | {c.p99_ms:.1f} | {c.sentences_per_s / offline:.2f} | {vs} | {c.errors} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per cell (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 s per cell")
    parser.add_argument("--no-infinity", action="store_true", help="only our server")
    parser.add_argument("--json", metavar="FILE", help="also write the machine and the cells as JSON")
    args = parser.parse_args(argv)
    seconds = 3.0 if args.quick else args.seconds
    folder = SentenceEncoder.from_pretrained().folder
    sentences = short_corpus()

    peaks = {name: gemm_peak(dtype) for name, dtype in (("fp32", torch.float32), ("int8", torch.int8))}
    flags = " ".join(flag for flag in RELEVANT_FLAGS if flag in cpu_flags())
    print(f"CPU: {cpu_model()}; flags: {flags}; {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"GEMM peak (4096, 384, 1536): fp32 {peaks['fp32']:.0f} GFLOP/s, int8 {peaks['int8']:.0f} GOP/s")

    offline = offline_ceiling(folder, sentences)
    print(f"offline SentenceEncoder.encode, float32, batch 32: {offline:,.0f} sent/s", file=sys.stderr)
    cells: list[Cell] = []
    port = free_port()
    # by name, so that responses say all-MiniLM-L6-v2; it resolves to `folder`, the files infinity loads
    ours_command = [sys.executable, "-m", "minilm.serve", "--port", str(port), "--model", MODEL, "--no-heads"]
    ours, ours_start = run_server(
        "minilm", ours_command, port, "/health", "/v1/embeddings", sentences, seconds, {"HF_HUB_OFFLINE": "1"}
    )
    cells += ours
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
            "infinity", command, port, "/health", "/embeddings", sentences, seconds, {"HF_HUB_OFFLINE": "1"}
        )
        cells += found
    print()
    print(f"offline SentenceEncoder.encode (the ceiling): {offline:,.0f} sent/s")
    print(f"start to healthy: minilm {ours_start:.1f} s, infinity {infinity_start:.1f} s")
    print(table(cells, offline))
    if skipped:
        print(skipped)
    ours_64 = next(c for c in cells if c.server == "minilm" and c.clients == 64 and c.per_request == 1)
    print(f"\nminilm /metrics during the 64 single-sentence clients: {ours_64.batching}")
    peer_64 = next((c for c in cells if c.server == "infinity" and c.clients == 64 and c.per_request == 1), None)
    ours_1 = next(c for c in cells if c.server == "minilm" and c.clients == 1 and c.per_request == 1)
    print("\nTargets (64 single-sentence clients; 1 client):")
    print(f"- throughput {ours_64.sentences_per_s / offline:.0%} of offline encode (target >= 85%)")
    if peer_64:
        print(f"- {ours_64.sentences_per_s / peer_64.sentences_per_s:.2f}x infinity (target >= 1.5x)")
        print(f"- p99 {ours_64.p99_ms:.1f} ms against infinity's {peer_64.p99_ms:.1f} ms (target: no worse)")
    print(f"- 1 client, one sentence: p50 {ours_1.p50_ms:.1f} ms (target <= 15 ms)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "cpu": cpu_model(),
                    "flags": flags,
                    "gemm_peaks": peaks,
                    "offline": offline,
                    "cells": [asdict(c) for c in cells],
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
