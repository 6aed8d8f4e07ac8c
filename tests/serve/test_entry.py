"""python -m minilm.serve's start: the port it listens on, its options, and the errors before it serves."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from minilm.serve.__main__ import bind, main, parse_args

from conftest import ROOT


def test_a_second_server_on_the_same_port_is_one_error_line_and_exit_2():
    """Two servers started 0.5 s apart on one port: both bound it (SO_REUSEADDR, and neither listening
    yet while the model loads), uvloop swallowed the second's EADDRINUSE, and the second ran forever on
    no socket. The first now listens from the start, so the second stops at once. The second runs as a
    process with a time limit: were the fix undone, it would serve, and this test fail, not hang."""
    first = bind("127.0.0.1", 0)
    port = first.getsockname()[1]
    try:
        with pytest.raises(ValueError, match=rf"^cannot listen on 127\.0\.0\.1:{port}: .*; choose another --host"):
            bind("127.0.0.1", port)
        second = subprocess.run(
            [sys.executable, "-m", "minilm.serve", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,  # generous: it stops before loading the model, in about 2 s
        )
    finally:
        first.close()
    assert second.returncode == 2, second.stderr
    err = second.stderr
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}") and err.count("\n") == 1, err


@pytest.mark.parametrize("option", ["--body-timeout", "--header-timeout"])
@pytest.mark.parametrize("value", ["1e-300", "0.5", "nan", "4000"])
def test_a_timeout_outside_1_to_3600_seconds_is_one_error_line(option, value, capsys):
    """Before: --body-timeout 1e-300 was taken, and every POST got a 408 while /health said ok."""
    with pytest.raises(SystemExit) as exit_info:
        parse_args([option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: argument {option}: must be a finite number >= 1 and <= 3600, got "), err
    assert err.count("\n") == 1, err
    assert parse_args([option, "1"]).__dict__[option[2:].replace("-", "_")] == 1


@pytest.mark.slow  # loads the encoder twice (the server's, and the heads' stock backbone)
def test_heads_that_are_an_encoder_folder_are_named_as_heads(checkpoint_dir, capsys):
    threads = torch.get_num_threads()
    assert main(["--port", "0", "--heads", str(checkpoint_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "is an encoder checkpoint, not a heads folder; --heads takes a folder" in err and "--model" not in err
    assert torch.get_num_threads() == threads  # the server's loading setting is undone on the way out


@pytest.mark.parametrize("implementation", ["h11", "httptools"])
def test_the_connection_timeouts_hold_for_both_http_implementations(implementation):
    """TimedConnection on uvicorn's h11 protocol (its fallback) and httptools' (what it picks when installed),
    with a small app: half a request's headers, then nothing, is closed after the header timeout; a client
    that reads nothing of a 16 MB answer is dropped after the stall timeout, and the app's send returns."""
    import socket
    import threading
    import time

    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from minilm.serve.__main__ import TimedConnection

    answer, finished = b"x" * (16 * 2**20), threading.Event()

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(answer))]}
        )
        for at in range(0, len(answer), 2**18):  # in parts, as app.Guard sends answers
            await send({"type": "http.response.body", "body": answer[at : at + 2**18], "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        finished.set()

    base = {"h11": H11Protocol, "httptools": HttpToolsProtocol}[implementation]
    protocol = type("Timed", (TimedConnection, base), {"header_timeout": 0.5, "stall_timeout": 1.0})
    listening = bind("127.0.0.1", 0)
    port = listening.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, http=protocol, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        half = socket.create_connection(("127.0.0.1", port), timeout=30)  # generous: closed after 0.5 s
        half.sendall(b"GET / HTTP/1.1\r\nHo")
        assert half.recv(100) == b""
        half.close()
        idle = socket.socket()
        idle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        idle.connect(("127.0.0.1", port))
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(15) == b"HTTP/1.1 200 OK"
        assert finished.wait(30), "the answer nobody reads was never dropped"  # generous: after 1 s of no progress
        idle.close()
    finally:
        server.should_exit = True
        thread.join(30)
