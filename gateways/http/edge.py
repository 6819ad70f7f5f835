"""ASGI middleware at the edge: what every request must be before a route sees it, correlation
ids, latency metrics, tracing, and the headers every answer carries.

Refused here, each with a problem answer: a header that is not UTF-8 text (400
``malformed-header``), a query string with control characters or bytes that are not UTF-8 (400
``malformed-query``), a body over the limit, with or without a Content-Length (413
``body-too-large``), and a body that is not JSON in UTF-8 (415 ``unsupported-media-type``: another
media type or charset, a byte order mark, UTF-16). Bodies are read here whole (they are small:
the limit is ``GPUCLOUD_MAX_BODY_BYTES``) and handed on.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any
from urllib.parse import unquote_to_bytes

from opentelemetry import propagate, trace
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra import metrics
from infra.observability import correlation_id

REQUEST_ID = "x-request-id"
PROBLEMS = "https://gpucloud.dev/problems/"
REQUEST_ID_SHAPE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
JSON_TYPE = re.compile(r"^application/json\s*(;\s*charset\s*=\s*\"?utf-8\"?\s*)?$", re.IGNORECASE)
BOMS = (b"\xef\xbb\xbf", b"\xfe\xff", b"\xff\xfe")
WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ALWAYS = [(b"x-content-type-options", b"nosniff")]
API_ONLY = [(b"cache-control", b"no-store")]  # answers carry keys and balances: never cache
# What the edge answers (status, problem type); the contract documents them from here.
MALFORMED_HEADER = (400, "malformed-header")
MALFORMED_QUERY = (400, "malformed-query")
BODY_TOO_LARGE = (413, "body-too-large")
UNSUPPORTED_MEDIA_TYPE = (415, "unsupported-media-type")


class RefusedError(Exception):
    def __init__(self, answer: tuple[int, str], detail: str) -> None:
        super().__init__(detail)
        (self.status, self.kind), self.detail = answer, detail


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        token = correlation_id.set(rid)
        status = {"code": 500}
        started = time.perf_counter()
        try:
            send = _with_headers(send, scope, rid, status)
            try:
                headers = _headers(scope)
                _check_query(scope)
                receive = await self._body(scope, headers, receive)
            except RefusedError as refused:
                await _problem(scope, receive, send, refused)
                return
            with tracer.start_as_current_span(
                f"{scope['method']} {scope['path']}",
                context=propagate.extract(headers),
                kind=trace.SpanKind.SERVER,
            ):
                await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            metrics.HTTP_LATENCY.labels(scope["method"], path, str(status["code"])).observe(elapsed)
            correlation_id.reset(token)

    async def _body(self, scope: Scope, headers: dict[str, str], receive: Receive) -> Receive:
        """Read the body whole (refusing one too large or not UTF-8 JSON) and replay it."""
        if scope["method"] not in WITH_BODY:
            return receive
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            raise _too_large(self.max_body)
        body = await _read(receive, self.max_body)
        if body:
            _check_json(headers.get("content-type", ""), body)
        return _replay(body, receive)


tracer = trace.get_tracer("gpucloud.api")


def _request_id(scope: Scope) -> str:
    """The client's X-Request-Id when it is a sane one, else a new id (never echo junk)."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if REQUEST_ID_SHAPE.match(text) else str(uuid.uuid4())
    return str(uuid.uuid4())


def _headers(scope: Scope) -> dict[str, str]:
    headers = {}
    for name, value in scope["headers"]:
        try:
            headers[name.decode("latin-1").lower()] = value.decode("utf-8")
        except UnicodeDecodeError:
            detail = f"header {name.decode('latin-1')!r} is not UTF-8 text"
            raise RefusedError(MALFORMED_HEADER, detail) from None
    return headers


def _check_query(scope: Scope) -> None:
    for part in scope.get("query_string", b"").replace(b"+", b" ").split(b"&"):
        raw = unquote_to_bytes(part)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RefusedError(MALFORMED_QUERY, "the query string is not UTF-8") from None
        if CONTROL.search(raw):
            detail = "the query string holds control characters (NUL, newline, ...)"
            raise RefusedError(MALFORMED_QUERY, detail)


async def _read(receive: Receive, limit: int) -> bytes:
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _check_json(content_type: str, body: bytes) -> None:
    if not JSON_TYPE.match(content_type.strip()):
        detail = f"this API takes application/json in UTF-8, not {content_type or 'no type'!r}"
        raise RefusedError(UNSUPPORTED_MEDIA_TYPE, detail)
    if body.startswith(BOMS) or b"\x00" in body:
        detail = "the body must be JSON in UTF-8, without a byte order mark (not UTF-16)"
        raise RefusedError(UNSUPPORTED_MEDIA_TYPE, detail)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = {"body": False}

    async def replayed() -> Message:
        if sent["body"]:
            return await receive()  # after the body: the client's disconnect, when it comes
        sent["body"] = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def _too_large(limit: int) -> RefusedError:
    return RefusedError(BODY_TOO_LARGE, f"request bodies are limited to {limit} bytes")


def _with_headers(send: Send, scope: Scope, rid: str, status: dict[str, int]) -> Send:
    extra = [*ALWAYS, (b"x-request-id", rid.encode())]
    if scope["path"].startswith("/v1/"):
        extra += API_ONLY

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            status["code"] = message["status"]
            present = {name.lower() for name, _ in message.get("headers", [])}
            added = [(n, v) for n, v in extra if n not in present]
            message["headers"] = [*message.get("headers", []), *added]
        await send(message)

    return sending


async def _problem(scope: Scope, receive: Receive, send: Send, refused: RefusedError) -> None:
    body: dict[str, Any] = {
        "type": PROBLEMS + refused.kind,
        "title": refused.kind.replace("-", " ").capitalize(),
        "status": refused.status,
        "detail": refused.detail,
        "instance": scope["path"],
    }
    answer = JSONResponse(body, refused.status, media_type="application/problem+json")
    await answer(scope, receive, send)
