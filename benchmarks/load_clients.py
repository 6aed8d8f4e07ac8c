"""serve_load's load generator: closed-loop clients over hand-written HTTP/1.1 keep-alive requests, and
the record of one measured cell.

The clients share the machine's two cores with the server, so they are made as cheap as they can be:
asyncio with hand-written requests (about 30 µs each; serve_load reports their CPU per request), not
a client library (httpx costs about ten times that per request, which would come out of the server's
share).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass

MODEL = "all-MiniLM-L6-v2"  # the model name in the requests' bodies (and the name our server and infinity serve)


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
