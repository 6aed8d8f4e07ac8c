"""python -m minilm.serve: the HTTP server (pip install -e ".[serve]").

    python -m minilm.serve                                   # 127.0.0.1:8080, all-MiniLM-L6-v2, the shipped heads
    python -m minilm.serve --port 9000 --dtype auto --max-batch-tokens 4096
    curl -s localhost:8080/v1/embeddings -H 'content-type: application/json' \\
         -d '{"model": "all-MiniLM-L6-v2", "input": ["A dog runs.", "Why is the sky blue?"]}'

It binds and listens on the port (a port in use, or taken by a server starting at the same moment,
is one error line and exit 2), loads the encoder (and the heads, unless --no-heads), runs one
warm-up batch, then answers. SIGTERM or Ctrl-C: it stops accepting connections, answers the
requests already in for up to --drain-timeout seconds, then answers the rest 503 (their work is
dropped between batches) and exits 0 once the batch running is done. A second signal stops
at once, exit 130 (Ctrl-C) or 143 (SIGTERM). A connection that sends no headers within
--header-timeout, or whose client reads nothing of its answer for --body-timeout, is closed
(`TimedConnection`).
The routes and the batching are in app.py and batcher.py; docs/serve.md has the API.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys

import torch

from ..cli import (
    EXIT_USER_ERROR,
    ArgumentParser,
    add_model_arguments,
    add_prompt_arguments,
    load_encoder,
    number_option,
    positive_int,
    run,
)
from ..encoders.cross_encoder import CrossEncoder
from ..search.searcher import Searcher
from ..weights import DEFAULT_CHECKPOINT, WeightsError, lookup_known

try:  # the [serve] extra
    import uvicorn
    from uvicorn.protocols.http.auto import AutoHTTPProtocol  # httptools' protocol, or h11's without it

    from .app import create_app
    from .service import ServeSettings, Service
except ImportError as missing:
    print(f'error: {missing.name} is missing; install the server extra: pip install -e ".[serve]"', file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m minilm.serve",
        description="An HTTP server for embeddings (OpenAI- and TEI-compatible) and the multi-task heads, "
        "with dynamic batching across clients.",
        epilog="Routes: POST /v1/embeddings, GET /v1/models, POST /embed, POST /predict, POST /tokenize, "
        "GET /health, GET /metrics, GET /docs. See docs/serve.md.",
    )
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    net.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080; 0 picks a free one)")
    net.add_argument("--access-log", action="store_true", help="log every request on stderr (off: it costs under load)")
    net.add_argument(
        "--drain-timeout",
        type=positive_int,
        default=30,
        metavar="S",
        help="on SIGTERM or Ctrl-C, answer the requests in flight for up to S seconds, then answer the rest 503 "
        "and exit (default: 30, Kubernetes' grace period)",
    )
    # at least 1 s: a body of 16 MB takes a moment even on loopback, and 1e-300 made every POST a 408
    net.add_argument(
        "--body-timeout",
        type=number_option(minimum=1, maximum=3600),
        default=ServeSettings(model_name="").body_timeout_s,
        metavar="S",
        help="a request's whole body must arrive within S seconds of its headers, else 408 and the connection "
        "is closed; a client that reads nothing of its answer for S seconds is dropped (default: %(default)g)",
    )
    net.add_argument(
        "--header-timeout",
        type=number_option(minimum=1, maximum=3600),
        default=ServeSettings(model_name="").header_timeout_s,
        metavar="S",
        help="a connection must send a request's headers within S seconds of opening, or of its last answer, "
        "else it is closed (default: %(default)g)",
    )
    model = parser.add_argument_group("model")
    add_model_arguments(model)
    model.add_argument(
        "--heads",
        default=None,
        metavar="DIR",
        help="heads saved by python -m heads.train, for /predict (default: the shipped weights/heads)",
    )
    model.add_argument("--no-heads", action="store_true", help="do not load heads; /predict answers 404")
    model.add_argument(
        "--index",
        metavar="DIR",
        help="a shard folder of this model (python -m minilm.embed --output DIR/) for POST /search; its HNSW or "
        "binary index is used when it has one (python -m minilm.search build)",
    )
    model.add_argument(
        "--reranker",
        metavar="MODEL",
        help="a cross-encoder (name or folder) for TEI's POST /rerank; loaded unverified, as no reranker is pinned",
    )
    add_prompt_arguments(model)
    limits = parser.add_argument_group("batching and limits")
    defaults = ServeSettings(model_name="")
    limits.add_argument(
        "--max-batch-tokens",
        type=positive_int,
        default=defaults.max_batch_tokens,
        metavar="N",
        help="tokens per encoder batch, shared by all clients: the texts' own, as the packed encoder computes them, "
        "and at most 8x this padded (default: what encode uses for this --dtype and --device, "
        "minilm/encoders/batching.py)",
    )
    limits.add_argument(
        "--max-queue",
        type=positive_int,
        default=defaults.max_queue,
        metavar="N",
        help="requests admitted at once, each from its headers until its answer is out (so at most N bodies and "
        f"answers are held); more get 429 (default: {defaults.max_queue})",
    )
    limits.add_argument(
        "--max-request-inputs",
        type=positive_int,
        default=defaults.max_request_inputs,
        metavar="N",
        help=f"texts per request; more get 413 (default: {defaults.max_request_inputs}); "
        "a request within it is split over batches as needed",
    )
    limits.add_argument(
        "--max-body-mb",
        type=positive_int,
        default=defaults.max_body_bytes // 2**20,
        metavar="MB",
        help=f"request body size; more gets 413 (default: {defaults.max_body_bytes // 2**20})",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, got {args.port}")
    if args.heads and args.no_heads:
        parser.error("--heads and --no-heads contradict each other")
    return args


def served_names(model: str | None) -> tuple[str, frozenset[str]]:
    """The name responses carry, and the other names a request's "model" may use."""
    given = model or DEFAULT_CHECKPOINT
    known = lookup_known(given)
    if known:
        return known.name, frozenset({known.repo_id.lower(), given.lower()})
    name = given.rstrip("/").rsplit("/", 1)[-1]
    return name, frozenset({given.lower()})


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound and listening before the model loads: a port in use is an error line at
    once. listen() right after bind(): with SO_REUSEADDR, two sockets may both bind a port while neither
    listens, and uvloop then swallows the second's EADDRINUSE; two servers started 0.5 s apart both said
    "startup complete", and the second served nothing, forever."""
    sock = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)  # uvicorn's backlog
    except OSError as error:
        if sock is not None:
            sock.close()
        raise ValueError(
            f"cannot listen on {host}:{port}: {error.strerror or error}; choose another --host or --port"
        ) from None
    return sock


class TimedConnection:
    """Mixed into uvicorn's HTTP protocol (`timed_protocol`): the two timeouts uvicorn leaves out.

    - Headers: a connection that has not begun a request (sent its headers) within header_timeout seconds
      of opening, or of its last answer, is closed. uvicorn's keep-alive timeout runs only after an
      answer and stops at the first byte, so a connection that sent nothing, or half its headers, stayed
      open forever: 320 of them under a 300-file limit made every other request fail.
    - Answers: a connection whose answer has not moved for stall_timeout seconds (the client reads
      nothing, and the write buffer stays full) is dropped. app.Guard sends answers in parts and holds
      the request's place in the queue until the last part is out, so a client that never reads holds
      its place and its answer only this long.
    """

    header_timeout = 10.0
    stall_timeout = 60.0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._watch("headers", self.header_timeout, self._headers_due, self.cycle)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch("headers", self.header_timeout, self._headers_due, self.cycle)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch("answer", self.stall_timeout, self._answer_due, self.transport.get_write_buffer_size())

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel("answer")

    def connection_lost(self, exc) -> None:
        super().connection_lost(exc)
        for name in list(self._timers):
            self._cancel(name)

    def _headers_due(self, cycle) -> None:
        if self.cycle is cycle and not self.transport.is_closing():  # no request began since the timer started
            self.transport.close()

    def _answer_due(self, size: int) -> None:
        if self.transport.is_closing() or not self.flow.write_paused:
            return
        left = self.transport.get_write_buffer_size()
        if left < size:  # the client took some: watch on
            self._watch("answer", self.stall_timeout, self._answer_due, left)
        else:  # (close() would wait for the buffer to empty)
            self.logger.info("dropping a connection whose client read nothing for %g s", self.stall_timeout)
            self.transport.abort()

    def _watch(self, name: str, delay: float, callback, *args) -> None:
        self._cancel(name)
        self._timers[name] = self.loop.call_later(delay, callback, *args)

    def _cancel(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()


def timed_protocol(header_timeout: float, stall_timeout: float) -> type:
    """uvicorn's HTTP protocol class (as `http="auto"` picks it) with TimedConnection's timeouts."""
    return type(
        "TimedHTTPProtocol",
        (TimedConnection, AutoHTTPProtocol),
        {"header_timeout": header_timeout, "stall_timeout": stall_timeout},
    )


class DrainingServer(uvicorn.Server):
    """uvicorn's server, but a second SIGTERM or Ctrl-C while draining stops at once, with a fixed exit
    status (130 or 143) and no tracebacks: the requests still in flight are dropped, and said to be.
    It also stops when the service's warm-up failed (Service.startup_error), for serve() to report."""

    def __init__(self, config: uvicorn.Config, service: Service):
        super().__init__(config)
        self.service = service

    async def on_tick(self, counter: int) -> bool:
        return self.service.startup_error is not None or await super().on_tick(counter)

    def handle_exit(self, sig: int, frame) -> None:
        if self.should_exit:
            print(f"{signal.Signals(sig).name} again: stopping without draining", file=sys.stderr, flush=True)
            os._exit(128 + sig)
        super().handle_exit(sig, frame)


def load_heads(folder: str | None, device: str):
    """MultiTaskPredictor.from_folder, its errors naming this command's option: heads/ says --model, as
    heads.predict calls it, and here it is --heads."""
    from heads.predictor import MultiTaskPredictor  # heads sit above minilm: only this entry point joins them

    try:
        return MultiTaskPredictor.from_folder(folder, device)
    except WeightsError as error:
        raise WeightsError(str(error).replace("--model", "--heads")) from None


def serve(args: argparse.Namespace) -> int:
    sock = bind(args.host, args.port)
    # Loading runs on one thread, so that only the inference worker holds an OpenMP team: two teams
    # on these cores would make every torch op sleep between parallel regions (batcher.py).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        encoder = load_encoder(args).use_packed()  # a round mixes lengths: no padding rows in the matmuls
        prompt = encoder.resolve_prompt(args.prompt_name, args.prompt)
        predictor = None if args.no_heads else load_heads(args.heads, args.device)
        # the folder must be this model's (Searcher checks its files against the manifest)
        searcher = Searcher(args.index, encoder=encoder) if args.index else None
        reranker = (
            CrossEncoder.from_pretrained(args.reranker, device=args.device, verify=False) if args.reranker else None
        )
    except BaseException:  # an error line follows: leave nothing open (main() may run in a test's process)
        sock.close()
        torch.set_num_threads(threads)
        raise
    predict_texts = None
    if predictor is not None:

        def predict_texts(texts: list[str], with_embedding: bool) -> list[dict]:
            return predictor.predict(texts, with_embedding=with_embedding, show_progress_bar=False)

    name, aliases = served_names(args.model)
    settings = ServeSettings(
        model_name=name,
        model_aliases=aliases,
        max_batch_tokens=None if args.max_batch_tokens is None else max(args.max_batch_tokens, encoder.max_seq_length),
        max_queue=args.max_queue,
        max_request_inputs=args.max_request_inputs,
        max_body_bytes=args.max_body_mb * 2**20,
        body_timeout_s=args.body_timeout,
        header_timeout_s=args.header_timeout,
        threads=threads,
        prompt=prompt,
    )
    if args.max_batch_tokens is not None and args.max_batch_tokens < encoder.max_seq_length:
        print(f"note: --max-batch-tokens raised to {encoder.max_seq_length}, the longest text", file=sys.stderr)
    service = Service(
        encoder,
        settings,
        predict_texts,
        predictor.tokenizer if predictor else None,
        searcher=searcher,
        reranker=reranker,
    )
    app = create_app(service)
    config = uvicorn.Config(
        app,
        http=timed_protocol(settings.header_timeout_s, settings.body_timeout_s),
        log_level="info",
        access_log=args.access_log,
        timeout_graceful_shutdown=args.drain_timeout,
    )
    host, port = sock.getsockname()[:2]
    print(f"minilm.serve: {name} ({encoder.dtype}) on http://{host}:{port}, warming up", file=sys.stderr, flush=True)
    # uvicorn catches SIGTERM/SIGINT, drains, then raises the signal again to its previous handler:
    # make that handler a no-op, so a drained shutdown exits 0 (cli.run would report it as 143).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    DrainingServer(config, service).run(sockets=[sock])
    if service.startup_error is not None:
        raise ValueError(f"the model failed its warm-up, so the server did not start: {service.startup_error}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run(lambda: serve(args))


if __name__ == "__main__":
    sys.exit(main())
