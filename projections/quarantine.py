"""The quarantine: events a projection could not apply, kept so it can move on without them.

A quarantined event's subject is blocked in that projection: its later events are kept here
too ("held"), not applied, so nothing is applied out of order; a replay applies a subject's
kept events in sequence. Events are stored as JSON bytes (a text column cannot keep the NUL
that may be why the event failed); every text column is made printable first.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, AsyncCursor

from projections.envelope import Envelope

HELD = "held back: an earlier event of this subject is quarantined"
COLUMNS = (
    "id, projection, subject, sequence, ce_type, topic, kafka_partition, kafka_offset, "
    "error, attempts, held, quarantined_at, resolved_at, resolution"
)
INSERT = (
    "INSERT INTO projection_quarantine (projection, subject, sequence, ce_type, topic, "
    "kafka_partition, kafka_offset, event, error, attempts, held) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
)


def printable(text: str, limit: int = 2000) -> str:
    """``text`` safe for a text column and a log line: NUL and other control characters and
    lone surrogates escaped, at most ``limit`` characters."""
    cleaned = "".join(
        ch if ch.isprintable() or ch in "\n\t" else ch.encode("unicode_escape").decode()
        for ch in text[:limit]
    )
    return cleaned.encode("utf-8", "backslashreplace").decode("utf-8")


def encode(env: Envelope) -> bytes:
    return json.dumps(dataclasses.asdict(env)).encode()


def decode(raw: bytes) -> Envelope:
    return Envelope(**json.loads(raw))


async def open_subjects(cur: AsyncCursor[Any], projection: str, subjects: set[str]) -> set[str]:
    """Which of ``subjects`` have events waiting in quarantine (their later events must wait)."""
    await cur.execute(
        "SELECT DISTINCT subject FROM projection_quarantine "
        "WHERE projection = %s AND resolved_at IS NULL AND subject = ANY(%s)",
        (projection, list(subjects)),
    )
    return {row[0] for row in await cur.fetchall()}


async def keep(
    cur: AsyncCursor[Any], projection: str, env: Envelope, error: str, attempts: int, held: bool
) -> int:
    """Store one event in quarantine; returns its quarantine id."""
    await cur.execute(
        INSERT,
        (
            projection, printable(env.subject, 200), env.sequence, printable(env.ce_type, 200),
            env.topic, env.partition, env.offset, encode(env), printable(error), attempts, held,
        ),
    )  # fmt: skip
    row = await cur.fetchone()
    assert row is not None  # INSERT ... RETURNING
    return int(row[0])


async def keep_raw(
    cur: AsyncCursor[Any],
    projection: str,
    where: tuple[str, int, int],
    headers: dict[str, bytes],
    value: bytes | None,
    error: str,
) -> int:
    """Store a message that is not even an event (unparseable); it can only be discarded."""
    topic, partition, offset = where
    raw = {
        "headers": {k: v.decode("utf-8", "backslashreplace") for k, v in headers.items()},
        "value": (value or b"").decode("utf-8", "backslashreplace"),
    }
    params = (projection, None, None, None, topic, partition, offset)
    await cur.execute(INSERT, (*params, json.dumps(raw).encode(), printable(error), 1, False))
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def listing(
    conn: AsyncConnection[Any], projection: str | None = None, resolved: bool = False
) -> list[dict[str, Any]]:
    """Quarantined events, oldest first: the open ones, or with ``resolved`` every one."""
    cur = await conn.execute(
        f"SELECT {COLUMNS} FROM projection_quarantine "
        "WHERE (%s::text IS NULL OR projection = %s) AND (%s OR resolved_at IS NULL) ORDER BY id",
        (projection, projection, resolved),
    )
    names = [c.strip() for c in COLUMNS.split(",")]
    return [_row(dict(zip(names, row, strict=True))) for row in await cur.fetchall()]


def _row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


async def open_events(
    cur: AsyncCursor[Any], projection: str, ids: Sequence[int] | None
) -> list[tuple[int, str | None, bytes]]:
    """(id, subject, event bytes) of the open rows to replay, in subject order: ``ids`` or
    every open one. A subject's rows come together, by sequence."""
    await cur.execute(
        "SELECT id, subject, event FROM projection_quarantine WHERE projection = %s "
        "AND resolved_at IS NULL AND (%s::bigint[] IS NULL OR id = ANY(%s)) "
        "ORDER BY subject, sequence, id",
        (projection, None if ids is None else list(ids), None if ids is None else list(ids)),
    )
    return [(int(r[0]), r[1], bytes(r[2])) for r in await cur.fetchall()]


async def resolve(cur: AsyncCursor[Any], ids: Iterable[int], resolution: str) -> int:
    await cur.execute(
        "UPDATE projection_quarantine SET resolved_at = now(), resolution = %s "
        "WHERE id = ANY(%s) AND resolved_at IS NULL",
        (resolution, list(ids)),
    )
    return cur.rowcount


async def resolve_projection(cur: AsyncCursor[Any], projection: str, resolution: str) -> int:
    """Close every open row of a projection (a rebuild replays their events anew)."""
    await cur.execute(
        "UPDATE projection_quarantine SET resolved_at = now(), resolution = %s "
        "WHERE projection = %s AND resolved_at IS NULL",
        (resolution, projection),
    )
    return cur.rowcount


async def open_count(conn: AsyncConnection[Any]) -> dict[str, int]:
    cur = await conn.execute(
        "SELECT projection, count(*) FROM projection_quarantine WHERE resolved_at IS NULL "
        "GROUP BY projection"
    )
    return {row[0]: int(row[1]) for row in await cur.fetchall()}
