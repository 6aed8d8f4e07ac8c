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

The client shares the machine's two cores with the server, so it is made as cheap as it can be:
asyncio with hand-written HTTP/1.1 keep-alive requests (about 30 µs each), not a client library
(httpx costs about ten times that per request, which would come out of the server's share).
Responses are checked for status 200, and the first one of every cell for its vector count.

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
import itertools
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
    loop_ms: float = float("nan")  # ours: CPU of the event loop's thread per request answered (ms)
    others_ms: float = float("nan")  # ours: CPU of every other thread (the model's, tokenizing) per text (ms)
    client_ms: float = float("nan")  # CPU of this load generator (the clients, same machine) per request (ms)
    foreign_cores: float = float("nan")  # CPU of other processes on the machine during the cell, in cores
    offline: float = float("nan")  # offline encode's sent/s just before and just after the cell, their mean

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


def thread_cpu(pid: int) -> dict[int, float]:
    """Each thread's CPU seconds so far (user + system, from /proc; 10 ms resolution), by thread id."""
    seconds = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        seconds[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime: fields 14 and 15
    return seconds


def process_cpu(pid: int) -> float:
    """A process's CPU seconds so far, all its threads (user + system, from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ForeignCpu:
    """The CPU that processes other than these used while it was open, in cores: the machine's busy time
    (/proc/stat) less theirs. On a shared machine a run beside someone else's job is not a measurement:
    near 0 is a clean run, and a tenth of a core or more says it was disturbed."""

    def __init__(self, *pids: int):
        self.pids = (os.getpid(), *pids)
        self.start = self.read()

    def read(self) -> tuple[float, float, float]:
        ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
        return time.perf_counter(), busy, sum(process_cpu(pid) for pid in self.pids)

    def cores(self) -> float:
        (t0, busy0, own0), (t1, busy1, own1) = self.start, self.read()
        return max((busy1 - busy0) - (own1 - own0), 0.0) / (t1 - t0)


CLEAN_CORES = 0.1  # a measurement during which other processes took less than this is clean
IDLE_WAIT_S = 900  # --retries waits at most this long for an idle moment before each measurement


def wait_idle(*pids: int) -> None:
    """Until other processes than these (and this one) have taken under CLEAN_CORES for 3 s, or IDLE_WAIT_S."""
    deadline = time.monotonic() + IDLE_WAIT_S
    while time.monotonic() < deadline:
        foreign = ForeignCpu(*pids)
        time.sleep(3)
        if foreign.cores() < CLEAN_CORES:
            return


def answered(page: str, path: str) -> float:
    found = re.search(rf'^minilm_requests_total\{{code="200",endpoint="{path}"\}} (\S+)$', page, re.M)
    return float(found.group(1)) if found else 0.0


def cpu_split(pid: int, before: dict[int, float], after: dict[int, float], requests: float, texts: float):
    """(event loop CPU ms per request, other threads' CPU ms per text) between two thread_cpu readings: the
    event loop is the process's main thread (uvicorn's), the rest the model's threads and the thread pool."""
    loop = after.get(pid, 0.0) - before.get(pid, 0.0)
    others = sum(t - before.get(tid, 0.0) for tid, t in after.items() if tid != pid)
    return 1000 * loop / max(requests, 1), 1000 * others / max(texts, 1)


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
    before = read_metrics(port) if ours else ""
    cpu_before, foreign, client_before = thread_cpu(pid), ForeignCpu(pid), process_cpu(os.getpid())
    latencies, errors, window = asyncio.run(closed_loop(port, path, bodies, clients, per_request, seconds))
    cpu_after, foreign_cores, client = thread_cpu(pid), foreign.cores(), process_cpu(os.getpid()) - client_before
    if not latencies:
        raise RuntimeError(f"{name}: no request succeeded ({errors} errors) with {clients} clients")
    ms = np.array(latencies) * 1000
    after = read_metrics(port) if ours else ""
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
        batch_summary(before, after) if ours else "",
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


# ---------------------------------------------------------------------------- the batcher alone


def batcher_alone(clients: int, seconds: float) -> None:
    """Child process (--batcher-alone N): our server's batcher and packed encoder with N closed-loop
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
            command = [sys.executable, __file__, "--batcher-alone", str(clients), "--seconds", str(seconds)]
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
    parser.add_argument("--batcher-alone", type=int, metavar="N", help=argparse.SUPPRESS)  # measure_batcher's child
    parser.add_argument(
        "--serve-args", default="", metavar="ARGS", help="more options for our server, e.g. '--max-batch-tokens 8192'"
    )
    args = parser.parse_args(argv)
    seconds = 3.0 if args.quick else args.seconds
    if args.batcher_alone:
        batcher_alone(args.batcher_alone, seconds)
        return 0
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
