"""The ASGI middleware in front of the routes (`Guard`): admission, body limits, answers sent in parts, and
the request metrics. What a request may cost is docs/serve.md's "Limits"; app.py's Service does the work."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Callable

from .errors import ApiError, error_response

if TYPE_CHECKING:
    from .service import Service

QUEUED_ROUTES = frozenset(
    {"/v1/embeddings", "/embed", "/predict", "/tokenize", "/search", "/rerank"}
)  # POSTs that take a place in the queue
SEND_CHUNK = 256 * 1024  # answers go out in parts of this size, each once the client has taken the last ones
Direct = Callable[[dict, bytes, Callable, Callable], Awaitable[bool]]  # (scope, body, receive, send) -> answered


class Guard:
    """Pure ASGI middleware in front of the app: admission, the body limits, answers sent in parts, and the
    request count and latency metrics.

    - Admission: a POST to a route that works (QUEUED_ROUTES) takes its place in the queue from its
      headers on (`Service.admit`: 429 when --max-queue requests hold one), before a byte of its body is
      kept, and holds it until its answer is out or its client is gone. Memory then holds at most
      --max-queue bodies and answers: 40 clients each sending a 16 MB body short of its last byte
      once took RSS from 390 MB to 1 GB, with --max-queue 1. A refused request's body is read and dropped.
    - Size: a body over --max-body-mb is a 413, before any parsing. It is read to its end and dropped,
      so the client gets its 413 instead of a reset connection, and memory holds one chunk of it.
    - Time: the whole body must arrive within --body-timeout seconds of the headers; a client that
      stalls (or trickles) gets a 408 and the connection is closed.
    - Answers go out in parts of SEND_CHUNK bytes, each once uvicorn has room for it (its send waits
      while the client is not reading), so the place is held until the answer is out; a client that
      reads nothing is dropped by the connection's own timeout (__main__.TimedConnection).
    - Direct routes: a route in `direct` (app.py's POST /v1/embeddings) gets the body first, and answers it
      itself unless it returns False (a body it leaves to the app's FastAPI route).
    - The drain: when --drain-timeout is over, uvicorn cancels the requests still running. Each gets
      the 503 a stopping server gives (JSON, in the caller's dialect), not uvicorn's text/plain 500
      with a CancelledError traceback in the log; its job was abandoned on the way out (Service.run).
    """

    def __init__(self, app, service: Service, routes: set[str], direct: dict[str, Direct] | None = None):
        self.app, self.service, self.routes, self.direct = app, service, routes, direct or {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, path = time.perf_counter(), scope["path"]
        endpoint = path if path in self.routes else "other"
        status, started = 500, False

        async def send_and_count(message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            body = message.get("body", b"") if message["type"] == "http.response.body" else b""
            if len(body) > SEND_CHUNK or not isinstance(body, bytes):  # (a memoryview goes out as bytes)
                more = message.get("more_body", False)
                starts = range(0, max(len(body), 1), SEND_CHUNK)
                for at in starts[:-1]:  # (uvicorn's send waits, before each part, while the client is not reading)
                    await send(
                        {"type": "http.response.body", "body": bytes(body[at : at + SEND_CHUNK]), "more_body": True}
                    )
                message = {"type": "http.response.body", "body": bytes(body[starts[-1] :]), "more_body": more}
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                metrics = self.service.metrics
                metrics.requests.labels(endpoint, str(status)).inc()
                metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

        async def answer(error: ApiError) -> None:
            await error_response(path, error, self.service.metrics)(scope, receive, send_and_count)

        try:
            await self.guarded(scope, receive, send_and_count, answer)
        except asyncio.CancelledError:  # uvicorn's end of the drain (the only one that cancels a request)
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):  # Python 3.11+: this cancellation is handled
                task.uncancel()
            if not started:
                message = "the server is shutting down and stopped this request (--drain-timeout); retry it"
                await answer(ApiError(503, message))

    async def guarded(self, scope, receive, send, answer: Callable) -> None:
        """A place in the queue (for QUEUED_ROUTES), the body within its limits, then the app."""
        queued = scope["method"] == "POST" and scope["path"] in QUEUED_ROUTES
        refused = None
        if queued:
            try:
                self.service.admit()
            except ApiError as error:
                refused = error
        try:
            try:
                body = await self.read_body(scope, receive, keep=refused is None)
            except BodyTooLarge as error:
                return await answer(ApiError(413, str(error)))
            except asyncio.TimeoutError:
                timeout = self.service.settings.body_timeout_s
                message = f"the body did not arrive within {timeout:g} s (--body-timeout); send it at once"
                return await answer(ApiError(408, message, headers={"Connection": "close"}))
            if body is None:  # the client went away while sending it
                return
            if refused is not None:
                return await answer(refused)
            direct = self.direct.get(scope["path"]) if queued else None
            if direct is not None and await direct(scope, body, receive, send):
                return
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            if queued and refused is None:
                self.service.release()

    async def read_body(self, scope, receive, keep: bool = True) -> bytes | None:
        """The whole body (b"" for a method without one, or when not kept: read and dropped), None if the
        client disconnected; BodyTooLarge over the limit (after reading the rest), asyncio.TimeoutError
        when it is not in by the deadline."""
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return b""
        settings = self.service.settings
        limit, deadline = settings.max_body_bytes, time.monotonic() + settings.body_timeout_s
        declared = dict(scope.get("headers", [])).get(b"content-length")
        chunks, size, more = [], 0, True
        if declared is not None and declared.isdigit() and int(declared) > limit:
            size = int(declared)
        while more:
            message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0))
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if keep and size <= limit:
                chunks.append(chunk)
            more = message.get("more_body", False)
        if size > limit:
            raise BodyTooLarge(f"the body is over {limit:,} bytes (--max-body-mb); send fewer texts per request")
        return b"".join(chunks)


class BodyTooLarge(Exception):
    """A request body over --max-body-mb (413)."""
