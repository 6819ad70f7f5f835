"""The relay's quarantine: stored events it could not turn into a message, and those behind them.

A stored event whose type has no wire entry, or whose payload its wire model refuses, is
"poisoned": it is kept here (a row, a copy on ``<topic>.dlq``, ``gpucloud_relay_quarantined_total``)
and the relay goes on with the log. The later events of the same aggregate are kept here too
("held"), unpublished: consumers dedupe by (subject, sequence), so a later event published first
would make them skip the poisoned one for good once it is retried. Other aggregates are not held.

``retry`` publishes a subject's kept events again, in sequence, once the fix is deployed (each
exactly once: the rows are resolved in the transaction that published them, under a lock the
relay also takes when it writes rows); ``discard`` gives up on some, recording who and when.
A row names its notification: the event itself stays in the store, which is append-only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from eventsourcing.application import Application
from eventsourcing.persistence import Mapper, Notification
from eventsourcing.utils import get_topic
from psycopg import AsyncConnection, AsyncCursor
from psycopg_pool import AsyncConnectionPool

from infra.cloudevents import OutboundMessage, to_message
from infra.messages import WIRE
from infra.messages.names import RELAY_UNROUTED_TOPIC
from projections.quarantine import printable

log = logging.getLogger("gpucloud.relay")
Build = Callable[[str, Mapper[Any], Notification], OutboundMessage]
"""Stored event -> message: ``infra.cloudevents.to_message``, or the name the relay calls."""
Blocked = dict[str, int]
"""Subjects with kept events: subject -> the lowest open sequence (its later events wait)."""

LOCK = "SELECT pg_advisory_xact_lock(hashtext('gpucloud.relay-quarantine.' || %s))"
COLUMNS = (
    "id, relay_name, context, notification_id, subject, sequence, event_type, "
    "dead_letter_topic, error, held, attempts, quarantined_at, resolved_at, resolution, "
    "resolved_by"
)
OPEN = (
    "SELECT subject, min(sequence) FROM relay_quarantine "
    "WHERE relay_name = %s AND resolved_at IS NULL AND (%s::text[] IS NULL OR subject = ANY(%s)) "
    "GROUP BY subject"
)


@dataclass(frozen=True)
class Kept:
    """A stored event the relay keeps back: poisoned (``error``) or held behind one."""

    note: Notification
    error: str | None = None
    dead_letter_topic: str | None = None

    @property
    def subject(self) -> str:
        return str(self.note.originator_id)


@dataclass
class Sorted:
    """A batch sorted by the relay: what goes out, what is kept, and which subjects were held
    because of rows already in the table (to check again when the rows are written)."""

    messages: list[OutboundMessage] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)
    held_on: Blocked = field(default_factory=dict)

    @property
    def poisoned(self) -> list[Kept]:
        return [k for k in self.kept if k.error is not None]


def sort_batch(
    context: str,
    mapper: Mapper[Any],
    notes: Sequence[Notification],
    blocked: Blocked,
    build: Build = to_message,
) -> Sorted:
    """Turn ``notes`` into messages; keep back the ones that fail and those of their subjects
    (and of subjects ``blocked`` already) from the blocking sequence on."""
    out = Sorted()
    blocking = dict(blocked)
    for note in notes:
        subject = str(note.originator_id)
        first = blocking.get(subject)
        if first is not None and note.originator_version >= first:
            out.kept.append(Kept(note))
            if subject in blocked:
                out.held_on[subject] = blocked[subject]
            continue
        try:
            out.messages.append(build(context, mapper, note))
        except Exception as failure:
            out.kept.append(Kept(note, f"{type(failure).__name__}: {failure}", dead_letter(note)))
            blocking[subject] = note.originator_version
    return out


_BY_AGGREGATE = {get_topic(cls).rpartition(".")[0]: w.kafka_topic for cls, w in WIRE.items()}


def dead_letter(note: Notification) -> str:
    """The dead-letter topic of a stored event: its aggregate's topic's ``.dlq`` (found from
    its stored type name, even when that type has no wire entry), else the unrouted one."""
    topic = _BY_AGGREGATE.get(note.topic.rpartition(".")[0], RELAY_UNROUTED_TOPIC)
    return f"{topic}.dlq"


async def open_subjects(
    cur: AsyncCursor[Any], relay_name: str, subjects: Sequence[str] | None = None
) -> Blocked:
    """The subjects with open rows (of ``subjects``, or all) and their lowest open sequence."""
    wanted = None if subjects is None else list(subjects)
    await cur.execute(OPEN, (relay_name, wanted, wanted))
    return {row[0]: int(row[1]) for row in await cur.fetchall()}


async def keep(
    cur: AsyncCursor[Any], relay_name: str, context: str, kept: Sequence[Kept]
) -> dict[int, int]:
    """Store the kept events in one statement (a row already there stays as it is); returns
    the new poisoned rows' ids by notification id."""
    await cur.execute(
        "INSERT INTO relay_quarantine (relay_name, context, notification_id, subject, sequence, "
        "event_type, dead_letter_topic, error, held) SELECT %s, %s, n, s, q, t, d, e, e IS NULL "
        "FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[]) "
        "AS k(n, s, q, t, d, e) ON CONFLICT (relay_name, notification_id) DO NOTHING "
        "RETURNING id, notification_id, held",
        (relay_name, context, *_columns(kept)),
    )
    return {int(r[1]): int(r[0]) for r in await cur.fetchall() if not r[2]}


def _columns(kept: Sequence[Kept]) -> list[list[Any]]:
    return [
        [k.note.id for k in kept],
        [k.subject for k in kept],
        [k.note.originator_version for k in kept],
        [printable(k.note.topic, 300) for k in kept],
        [k.dead_letter_topic for k in kept],
        [None if k.error is None else printable(k.error) for k in kept],
    ]


async def dead_letter_copies(
    producer: AIOKafkaProducer, context: str, poisoned: Sequence[Kept], ids: Mapping[int, int]
) -> None:
    """Copy each newly poisoned event to its ``.dlq`` topic: the stored state as it is, with
    where it came from. Best effort: the table is the record."""
    for k in (k for k in poisoned if k.note.id in ids):
        headers = {
            "ce_subject": k.subject,
            "ce_sequence": str(k.note.originator_version),
            "ce_position": str(k.note.id),
            "gpucloud_relay": context,
            "gpucloud_quarantine_id": str(ids[k.note.id]),
            "gpucloud_event_type": printable(k.note.topic, 300),
            "gpucloud_error": printable(k.error or "", 500),
        }
        try:
            sent = await producer.send(
                k.dead_letter_topic or dead_letter(k.note), value=k.note.state,
                key=k.subject.encode(), headers=[(h, v.encode()) for h, v in headers.items()],
            )  # fmt: skip
            await sent
        except Exception:
            log.warning("could not copy quarantined event %d to its .dlq", k.note.id)


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
