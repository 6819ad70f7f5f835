"""Read-your-writes: position tokens handed out by writes and honoured by reads."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from uuid import UUID

from fastapi import Response
from psycopg_pool import AsyncConnectionPool

from gateways.problems import ProblemError
from projections.runner import reached

HEADER = "X-Position-Token"


def mark_written(
    response: Response, location: str, projection: str, subject: UUID, version: int
) -> None:
    """A write's answer: where the resource is, and the token a read may send back."""
    response.headers["Location"] = location
    response.headers[HEADER] = make_token(projection, str(subject), version)


def make_token(projection: str, subject: str, sequence: int) -> str:
    raw = json.dumps({"p": projection, "s": subject, "q": sequence}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def parse_token(token: str) -> tuple[str, str, int]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return str(data["p"]), str(data["s"]), int(data["q"])
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise ProblemError(
            400, "invalid-position-token", f"{HEADER} is not a token this API issued"
        ) from exc


async def wait_for(pool: AsyncConnectionPool, token: str | None, bound: float) -> None:
    """Return once the read model has passed ``token``; 503 projection-behind past ``bound``."""
    if not token:
        return
    projection, subject, sequence = parse_token(token)
    deadline = time.monotonic() + bound
    while True:
        async with pool.connection() as conn:
            if await reached(conn, projection, subject, sequence):
                return
        if time.monotonic() >= deadline:
            raise ProblemError(
                503,
                "projection-behind",
                f"the {projection} read model has not caught up with your write yet; retry",
                {"Retry-After": "1"},
            )
        await asyncio.sleep(0.02)
