"""ASGI middleware at the edge: correlation ids, body size limit, latency metrics, tracing."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from opentelemetry import propagate, trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra import metrics
from infra.observability import correlation_id

REQUEST_ID = "x-request-id"
tracer = trace.get_tracer("gpucloud.api")


class BodyTooLargeError(Exception):
    pass


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        rid = headers.get(REQUEST_ID) or str(uuid.uuid4())
        token = correlation_id.set(rid)
        status = {"code": 500}
        started = time.perf_counter()
        try:
            if int(headers.get("content-length") or 0) > self.max_body:
                await _too_large(scope, send, rid, self.max_body)
                status["code"] = 413
                return
            with tracer.start_as_current_span(
                f"{scope['method']} {scope['path']}",
                context=propagate.extract(headers),
                kind=trace.SpanKind.SERVER,
            ):
                await self._call(scope, _limited(receive, self.max_body), send, rid, status)
        except BodyTooLargeError:
            await _too_large(scope, send, rid, self.max_body)
            status["code"] = 413
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            metrics.HTTP_LATENCY.labels(scope["method"], path, str(status["code"])).observe(elapsed)
            correlation_id.reset(token)

    async def _call(
        self, scope: Scope, receive: Receive, send: Send, rid: str, status: dict[str, int]
    ) -> None:
        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        await self.app(scope, receive, send_with_id)


def _limited(receive: Receive, limit: int) -> Receive:
    seen = {"n": 0}

    async def wrapped() -> Message:
        message = await receive()
        seen["n"] += len(message.get("body", b""))
        if seen["n"] > limit:
            raise BodyTooLargeError
        return message

    return wrapped


async def _too_large(scope: Scope, send: Send, rid: str, limit: int) -> None:
    body: dict[str, Any] = {
        "type": "https://gpucloud.dev/problems/body-too-large",
        "title": "Body too large",
        "status": 413,
        "detail": f"request bodies are limited to {limit} bytes",
        "instance": scope["path"],
    }
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(payload)).encode()),
                (b"x-request-id", rid.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
