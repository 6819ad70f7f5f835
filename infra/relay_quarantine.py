"""The relay's quarantine: stored events it could not turn into a message, and those behind them.

A stored event whose type has no wire entry, or whose payload its wire model refuses, is
"poisoned": it is kept here (a row, a copy on ``<topic>.dlq``, ``gpucloud_relay_quarantined_total``)
and the relay goes on with the log. The later events of the same aggregate are kept here too
("held"), unpublished: consumers dedupe by (subject, sequence), so a later event published first
would make them skip the poisoned one for good once it is retried. Other aggregates are not held.

``infra/relay_retry.py`` publishes a subject's kept events again, in sequence, once the fix is
deployed (each exactly once: the rows are resolved in the transaction that published them,
under ``LOCK``, which the relay also takes when it writes rows), or discards some.
A row names its notification: the event itself stays in the store, which is append-only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from eventsourcing.persistence import Mapper, Notification
from eventsourcing.utils import get_topic
from psycopg import AsyncCursor

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
