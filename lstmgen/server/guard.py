"""An ASGI layer in front of the app: body-size and concurrency limits, answered in the API's error shape
before any handler runs, and the request counts and durations for /metrics. Pure ASGI, so streamed
responses pass through untouched (Starlette's BaseHTTPMiddleware would copy every chunk through a
memory stream, which cost the server half its streaming throughput)."""
from __future__ import annotations

import json
import time
from typing import Collection, Optional

from .schema import error_body


async def send_error(send, status: int, body: dict, headers=()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class Guard:
    """Refuse bodies over `max_body_bytes` (413) and requests past `max_concurrent` in flight (503).

    Args:
        app: the ASGI app.
        max_body_bytes: the largest request body.
        max_concurrent: HTTP requests handled at once.
        metrics: counts requests by path and status, and their durations (None: not counted).
        paths: the paths counted by name (others count as "other").
    """

    def __init__(self, app, max_body_bytes: int, max_concurrent: int, metrics=None,
                 paths: Collection[str] = ()) -> None:
        self.app, self.max_body, self.max_concurrent = app, max_body_bytes, max_concurrent
        self.metrics, self.paths = metrics, set(paths)
        self.in_flight = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status: Optional[int] = None
        t0 = time.perf_counter()

        async def counted_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, counted_send)
        finally:
            if self.metrics is not None and status is not None:
                path = scope["path"] if scope["path"] in self.paths else "other"
                self.metrics.inc("lstmgen_requests_total", help="HTTP requests by path and status", path=path,
                                 status=str(status))
                self.metrics.observe("lstmgen_request_seconds", time.perf_counter() - t0,
                                     "Request duration (to the end of the response or stream)", path=path)

    async def _guarded(self, scope, receive, send) -> None:
        too_large = error_body(f"the request body is larger than {self.max_body} bytes", code="request_too_large")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await send_error(send, 413, too_large)
        if self.in_flight >= self.max_concurrent:
            return await send_error(send, 503, error_body(
                f"the server is handling {self.in_flight} requests; retry shortly", "server_error",
                code="overloaded"), [(b"retry-after", b"1")])
        # Read the body here, up to the limit, and hand it on whole: a handler never sees an oversized one.
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                return await send_error(send, 413, too_large)
        replay = [{"type": "http.request", "body": bytes(body), "more_body": False}]

        async def replay_receive():
            return replay.pop() if replay else await receive()

        self.in_flight += 1
        try:
            await self.app(scope, replay_receive, send)
        finally:
            self.in_flight -= 1
