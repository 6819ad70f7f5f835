"""Ops on the relay's quarantine (``infra/relay_quarantine.py``): list, retry, discard.

A retry publishes a subject's kept events in sequence, each exactly once: one transaction takes
the quarantine lock (the relay takes it too when it writes rows), rebuilds the messages from the
store, waits for the broker's acknowledgement and resolves the rows. A discard records who and
when; the subject's held events then still wait for a retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from eventsourcing.application import Application
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from infra.cloudevents import OutboundMessage, to_message
from infra.relay_quarantine import LOCK
from projections.quarantine import printable

COLUMNS = (
    "id, relay_name, context, notification_id, subject, sequence, event_type, "
    "dead_letter_topic, error, held, attempts, quarantined_at, resolved_at, resolution, "
    "resolved_by"
)


async def listing(conn: AsyncConnection[Any], resolved: bool = False) -> list[dict[str, Any]]:
    """The kept events, oldest first: the open ones, or with ``resolved`` every one."""
    cur = await conn.execute(
        f"SELECT {COLUMNS} FROM relay_quarantine WHERE (%s OR resolved_at IS NULL) ORDER BY id",
        (resolved,),
    )
    names = [c.strip() for c in COLUMNS.split(",")]
    return [
        {k: v.isoformat() if isinstance(v, datetime) else v for k, v in zip(names, r, strict=True)}
        for r in await cur.fetchall()
    ]


async def discard(pool: AsyncConnectionPool, ids: Sequence[int], by: str) -> int:
    """Give up on kept events (consumers will never see them). A subject's held events stay
    kept until they are retried."""
    async with pool.connection() as conn, conn.transaction():
        for relay_name in await _relays_of(conn, ids):
            await conn.execute(LOCK, (relay_name,))
        cur = await conn.execute(
            "UPDATE relay_quarantine SET resolved_at = now(), resolution = 'discarded', "
            "resolved_by = %s WHERE id = ANY(%s) AND resolved_at IS NULL",
            (by, list(ids)),
        )
        return cur.rowcount


async def _relays_of(conn: AsyncConnection[Any], ids: Sequence[int] | None) -> list[str]:
    cur = await conn.execute(
        "SELECT DISTINCT relay_name FROM relay_quarantine WHERE resolved_at IS NULL "
        "AND (%s::bigint[] IS NULL OR id = ANY(%s)) ORDER BY relay_name",
        (None if ids is None else list(ids), None if ids is None else list(ids)),
    )
    return [row[0] for row in await cur.fetchall()]


@dataclass(frozen=True)
class Retried:
    published: list[int]  # quarantine ids, in the order they went out
    still_failing: dict[int, str]  # quarantine id -> error


async def retry(
    pool: AsyncConnectionPool,
    apps: Mapping[str, Application[Any]],
    producer: AIOKafkaProducer,
    ids: Sequence[int] | None,
    by: str,
) -> Retried:
    """Publish the kept events of the subjects of ``ids`` (or of every open row) again, each
    subject's in sequence up to the first that still fails."""
    published: list[int] = []
    failing: dict[int, str] = {}
    for relay_name, subject in await _subjects_of(pool, ids):
        done, failed = await _retry_subject(pool, apps, producer, (relay_name, subject), by)
        published.extend(done)
        failing.update(failed)
    return Retried(published, failing)


async def _subjects_of(
    pool: AsyncConnectionPool, ids: Sequence[int] | None
) -> list[tuple[str, str]]:
    wanted = None if ids is None else list(ids)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT DISTINCT relay_name, subject FROM relay_quarantine WHERE resolved_at IS NULL "
            "AND (%s::bigint[] IS NULL OR id = ANY(%s)) ORDER BY relay_name, subject",
            (wanted, wanted),
        )
        return [(r[0], r[1]) for r in await cur.fetchall()]


async def _retry_subject(
    pool: AsyncConnectionPool,
    apps: Mapping[str, Application[Any]],
    producer: AIOKafkaProducer,
    where: tuple[str, str],
    by: str,
) -> tuple[list[int], dict[int, str]]:
    """One transaction: lock, rebuild the subject's messages in sequence, publish them, and
    resolve their rows; the broker's acknowledgement comes before the commit, so a failure
    leaves every row open (a crash after the acknowledgement may publish them twice)."""
    relay_name, subject = where
    async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await cur.execute(LOCK, (relay_name,))
        await cur.execute(
            "SELECT id, context, notification_id FROM relay_quarantine WHERE relay_name = %s "
            "AND subject = %s AND resolved_at IS NULL ORDER BY sequence FOR UPDATE",
            (relay_name, subject),
        )
        rows = [(int(r[0]), r[1], int(r[2])) for r in await cur.fetchall()]
        messages, done, failed = await _rebuild(apps, rows)
        for qid, error in failed.items():
            await cur.execute(
                "UPDATE relay_quarantine SET held = false, error = %s, attempts = attempts + 1 "
                "WHERE id = %s",
                (printable(error), qid),
            )
        await _send_in_order(producer, messages)
        await cur.execute(
            "UPDATE relay_quarantine SET resolved_at = now(), resolution = 'retried', "
            "resolved_by = %s WHERE id = ANY(%s)",
            (by, done),
        )
    return done, failed


async def _rebuild(
    apps: Mapping[str, Application[Any]], rows: Sequence[tuple[int, str, int]]
) -> tuple[list[OutboundMessage], list[int], dict[int, str]]:
    """The messages of ``rows`` in order, up to the first that still cannot be built."""
    messages: list[OutboundMessage] = []
    done: list[int] = []
    for qid, context, notification_id in rows:
        app = apps[context]
        try:
            notes = await asyncio.to_thread(
                app.recorder.select_notifications, notification_id, 1, notification_id
            )
            if not notes:
                raise LookupError(f"notification {notification_id} is not in the store")
            messages.append(to_message(app.name, app.mapper, notes[0]))
        except Exception as failure:
            return messages, done, {qid: f"{type(failure).__name__}: {failure}"}
        done.append(qid)
    return messages, done, {}


async def _send_in_order(producer: AIOKafkaProducer, messages: Sequence[OutboundMessage]) -> None:
    futures = [
        await producer.send(m.topic, value=m.value, key=m.key, headers=m.headers) for m in messages
    ]
    for sent in futures:
        await sent
