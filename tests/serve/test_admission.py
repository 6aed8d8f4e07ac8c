"""What a client that sends slowly, or reads nothing, can hold: a place in the queue and its own body and answer.

One server (no heads) with --max-queue 2, --body-timeout 5 and --header-timeout 2, checked over raw
sockets, by /metrics' minilm_queue_depth and by the server's RSS (/proc/PID/status). The bounds are
deliberately generous for a shared 2-core machine, and still far from what the defects cost:
- bodies: sixteen 16 MB bodies, two holding the places short of their last byte and fourteen refused,
  grow RSS by less than 128 MiB (before: every body was read into memory before the queue was asked,
  and 40 short of their last byte took RSS from 390 MB to 1 GB);
- answers: two /tokenize answers of 38 MB that nobody reads grow RSS by less than 300 MiB (measured: 140;
  before: 285 MB per request, in dicts and the tokenizer's encodings), and hold their places until the
  server drops them (before: the place was given back before the answer was built, so 12 such clients
  took RSS to 2.1 GB);
- headers: a connection that sends nothing is closed within 30 s (before: never).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest
from test_server import MODEL, Server

pytestmark = pytest.mark.slow  # a server of its own (about 4 s), and 256 MB of bodies over loopback

BODY_TIMEOUT, HEADER_TIMEOUT = 5, 2


@pytest.fixture(scope="module")
def server():
    s = Server(
        "--no-heads",
        "--max-queue",
        "2",
        "--body-timeout",
        str(BODY_TIMEOUT),
        "--header-timeout",
        str(HEADER_TIMEOUT),
    )
    yield s
    assert s.stop() == 0, s.output()


def rss(server: Server) -> int:
    status = open(f"/proc/{server.proc.pid}/status").read()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) * 1024


class PeakRss:
    """The server's highest RSS while the `with` block runs (sampled every 20 ms)."""

    def __init__(self, server: Server):
        self.server, self.peak, self.done = server, rss(server), threading.Event()
        self.start = self.peak
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.done.wait(0.02):
            self.peak = max(self.peak, rss(self.server))

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


def depth(server: Server) -> float:
    return float(re.search(r"^minilm_queue_depth (\S+)$", server.metrics(), re.M).group(1))


def wait_for_depth(server: Server, wanted: float, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while depth(server) != wanted:
        assert time.monotonic() < deadline, f"minilm_queue_depth never became {wanted}: {depth(server)}"
        time.sleep(0.05)


def request_head(route: str, length: int) -> bytes:
    return f"POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n".encode()


def read_head(client: socket.socket) -> bytes:
    """An answer's status line and headers (and whatever of its body came with them)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = client.recv(4096)
        assert chunk, f"the connection closed before the headers: {received!r}"
        received += chunk
    return received


def read_answer(client: socket.socket) -> tuple[bytes, bytes]:
    """A whole answer of known length: (status line and headers, body)."""
    head, _, body = read_head(client).partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
    while len(body) < length:
        chunk = client.recv(4096)
        assert chunk, f"the connection closed in the body: {head!r}"
        body += chunk
    return head, body


def test_a_body_is_read_only_once_the_queue_admits_it(server):
    """--max-queue 2: two 16 MB bodies short of their last byte take both places from their headers on;
    fourteen more whole 16 MB bodies are refused, read and dropped (each gets its 429 once its body is in),
    so memory holds two bodies, not sixteen."""
    body = json.dumps({"inputs": "a" * (16 * 2**20 - 100)}).encode()
    clients = []
    try:
        with PeakRss(server) as memory:
            for _ in range(2):
                client = socket.create_connection(("127.0.0.1", server.port))
                client.sendall(request_head("/embed", len(body)) + body[:-1])
                clients.append(client)
            wait_for_depth(server, 2)  # both admitted, from their headers on (before: only once a body was in)
            for _ in range(14):
                client = socket.create_connection(("127.0.0.1", server.port))
                client.settimeout(60)
                client.sendall(request_head("/embed", len(body)) + body)
                clients.append(client)
            for client in clients[2:]:  # (the answer comes once the body has been read to its end)
                status, answer = read_answer(client)
                assert status.startswith(b"HTTP/1.1 429") and b"retry-after: 1" in status.lower(), status
                assert "--max-queue 2" in json.loads(answer)["error"], answer
        assert memory.growth < 128 * 2**20, f"RSS grew by {memory.growth / 2**20:.0f} MiB for 16 x 16 MB bodies"
    finally:
        for client in clients:  # they go away: their places are free again
            client.close()
    wait_for_depth(server, 0)
    assert server.post("/embed", {"inputs": "served again"}).status_code == 200


def test_an_answer_nobody_reads_holds_its_place_until_the_server_drops_it(server):
    """Two /tokenize requests of 2,048 texts of 300 "!" (38 MB answers each), whose clients read the first
    bytes and then nothing: their places stay taken while the answers wait (a third request gets 429),
    memory holds the two answers compactly, and once an answer has not moved for --body-timeout seconds
    the server drops the connection and frees the place."""
    body = json.dumps({"inputs": ["!" * 300] * 2048}).encode()
    readers, lengths = [], []
    try:
        with PeakRss(server) as memory:
            for _ in range(2):
                client = socket.socket()
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that does not read
                client.connect(("127.0.0.1", server.port))
                client.settimeout(120)
                client.sendall(request_head("/tokenize", len(body)) + body)
                readers.append(client)
            for client in readers:  # the answer has started: its headers are in
                first = read_head(client)
                assert first.startswith(b"HTTP/1.1 200"), first[:200]
                lengths.append(int(re.search(rb"content-length: (\d+)", first, re.I).group(1)))
            r = server.post("/tokenize", {"inputs": "a"})  # both answers are still on their way
            assert r.status_code == 429, (r.status_code, r.text[:200])
        assert memory.growth < 300 * 2**20, f"RSS grew by {memory.growth / 2**20:.0f} MiB for two 38 MB answers"
        wait_for_depth(server, 0, within=BODY_TIMEOUT + 60)  # dropped once the answer stalled for 5 s
        for client, length in zip(readers, lengths):  # the connection was cut, the answer not finished
            received = 0
            try:
                while chunk := client.recv(2**20):
                    received += len(chunk)
            except ConnectionResetError:
                pass
            assert received < length, (received, length)
    finally:
        for client in readers:
            client.close()
    assert server.post("/tokenize", {"inputs": "a"}).status_code == 200


def test_a_connection_that_sends_nothing_is_closed(server):
    """Before: a connection that sent nothing, or part of its headers, stayed open forever (320 such sockets
    under a 300-file limit made every other request fail). Half a request's headers: test_entry.py, on both
    of uvicorn's HTTP implementations."""
    client = socket.create_connection(("127.0.0.1", server.port))
    client.settimeout(30)  # generous: the server closes it after 2 s
    started = time.monotonic()
    assert client.recv(4096) == b"", "the server answered instead of closing"
    assert time.monotonic() - started >= HEADER_TIMEOUT - 0.5  # not before the timeout (generous lower bound)
    client.close()
    r = server.post("/v1/embeddings", {"model": MODEL, "input": "still serving"})
    assert r.status_code == 200
