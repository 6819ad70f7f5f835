"""Read-your-writes: position tokens handed out by writes and honoured by reads."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

from fastapi import Request, Response
from psycopg import AsyncConnection

from gateways.http.auth import system_of
from gateways.http.problems import ProblemError
from projections.runner import reached

HEADER = "X-Position-Token"
INVALID_TOKEN = (400, "invalid-position-token")
BEHIND = (503, "projection-behind")
OPS_TENANT = "-"  # what a token of a caller without a tenant (ops) is bound to


def mark_written(
    request: Request,
    response: Response,
    location: str,
    projection: str,
    subject: UUID,
    version: int,
) -> None:
    """A write's answer: where the resource is, and the token a read may send back."""
    sys, tenant = system_of(request), _caller_tenant(request)
    response.headers["Location"] = location
    response.headers[HEADER] = make_token(
        sys.signing_key, tenant, projection, str(subject), version
    )


def make_token(key: bytes, tenant: str, projection: str, subject: str, sequence: int) -> str:
    """A token bound to the caller's tenant (``-`` for ops) and sealed with the server's secret:
    nobody can make one naming a subject of their choosing, or use another tenant's."""
    body = {"t": tenant, "p": projection, "s": subject, "q": sequence}
    body["h"] = _seal(key, body)
    raw = json.dumps(body, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def parse_token(key: bytes, tenant: str, token: str) -> tuple[str, str, int]:
    try:
        padded = token + "=" * (-len(token) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
        seal = str(body.pop("h"))
        if not hmac.compare_digest(seal, _seal(key, body)) or not _may_use(tenant, body["t"]):
            raise ValueError("not sealed for this tenant")
        return str(body["p"]), str(UUID(body["s"])), int(body["q"])
    except (binascii.Error, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProblemError(*INVALID_TOKEN, f"{HEADER} is not a token this API issued you") from exc


def _may_use(caller: str, issued_to: str) -> bool:
    """A tenant uses its own tokens and those of ops' writes (SKUs, its own tenant record);
    ops use any."""
    return issued_to in (caller, OPS_TENANT) or caller == OPS_TENANT


def _seal(key: bytes, body: dict[str, Any]) -> str:
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, raw.encode(), hashlib.sha256).hexdigest()[:32]


def _caller_tenant(request: Request) -> str:
    principal = getattr(request.state, "principal", None)
    tenant = getattr(principal, "tenant_id", None)
    return OPS_TENANT if tenant is None else str(tenant)


async def wait_for(request: Request, token: str | None) -> None:
    """Return once the read model has passed ``token``; 503 projection-behind past the bound
    (``GPUCLOUD_READ_WAIT_SECONDS``)."""
    if not token:
        return
    sys = system_of(request)
    projection, subject, sequence = parse_token(sys.signing_key, _caller_tenant(request), token)
    deadline = time.monotonic() + sys.settings.read_wait_seconds
    while True:
        async with sys.pool.connection() as conn:
            if await reached(conn, projection, subject, sequence):
                return
        if time.monotonic() >= deadline:
            raise ProblemError(
                *BEHIND,
                f"the {projection} read model has not caught up with your write yet; retry",
                {"Retry-After": "1"},
            )
        await asyncio.sleep(0.02)


@asynccontextmanager
async def read_model(request: Request, position: str | None) -> AsyncIterator[AsyncConnection[Any]]:
    """A read-model connection, once the read model has passed the caller's position token."""
    await wait_for(request, position)
    async with system_of(request).pool.connection() as conn:
        yield conn
