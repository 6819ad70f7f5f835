"""Poison events against real PostgreSQL: the event that fails a batch is found, retried, and
quarantined, everything else is applied, its subject's later events wait behind it, and ops
replay or discard it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from psycopg import AsyncConnection, AsyncCursor

from infra.db import conninfo, migrate
from projections import isolation, quarantine
from projections.envelope import Envelope
from projections.isolation import Isolator, Quarantined
from projections.runner import Projection, rebuild

pytestmark = pytest.mark.integration
TOPIC = "test.note.v1"


class Notes:
    """A read model of notes whose apply fails as a real one does: PostgreSQL refuses NUL in
    text. ``fixed`` is the code fix an operator deploys before replaying."""

    def __init__(self) -> None:
        self.fixed = False
        self.calls = 0
        self.projection = Projection("notes", (TOPIC,), ("notes",))
        self.projection.every_event = self.apply

    async def apply(self, cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
        self.calls += 1
        rows = [(e.subject, e.sequence, self._text(e.data["text"])) for e in envs]
        await cur.executemany("INSERT INTO notes VALUES (%s, %s, %s)", rows)

    def _text(self, text: str) -> str:
        return text.replace("\x00", "") if self.fixed else text


@pytest.fixture
async def conn(database_url: str, schema: str) -> AsyncIterator[AsyncConnection[Any]]:
    migrate(database_url, schema)
    info = conninfo(database_url, schema)
    async with await psycopg.AsyncConnection.connect(info, autocommit=True) as conn:
        await conn.execute("CREATE TABLE notes (subject text, sequence bigint, body text)")
        yield conn


def note(subject: str, sequence: int, text: str, offset: int) -> Envelope:
    return Envelope(
        TOPIC, 0, offset, "cloud.gpu.note.written.v1", subject, sequence, "t", {"text": text}
    )


def batch_with_one_poison() -> tuple[list[Envelope], str, str]:
    """Ten subjects' notes, and one subject whose first note holds a NUL."""
    bad, good = f"bad-{uuid4()}", [f"good-{i}" for i in range(10)]
    events = [note(s, 1, "hello", i) for i, s in enumerate(good)]
    events.insert(4, note(bad, 1, "n\x00", 100))
    events.append(note(bad, 2, "after the poison", 101))
    return events, bad, good[0]


async def rows(conn: AsyncConnection[Any], sql: str, *args: Any) -> list[tuple[Any, ...]]:
    cur = await conn.execute(sql, args)
    return await cur.fetchall()


async def test_one_poison_event_is_quarantined_and_the_rest_is_applied(
    conn: AsyncConnection[Any],
) -> None:
    notes, kept = Notes(), list[Quarantined]()

    async def alert(q: Quarantined) -> None:
        kept.append(q)

    events, bad, _ = batch_with_one_poison()
    tally = await Isolator(notes.projection, "e1", alert, pause=0).apply(conn, events)

    assert (tally.applied, tally.quarantined) == (10, 1)
    assert await rows(conn, "SELECT count(*) FROM notes WHERE subject LIKE 'good-%%'") == [(10,)]
    assert await rows(conn, "SELECT count(*) FROM notes WHERE subject = %s", bad) == [(0,)]
    assert [q.envelope.sequence for q in kept] == [1] and "NUL" in kept[0].error
    listed = await quarantine.listing(conn, "notes")
    assert [(r["subject"], r["sequence"], r["held"], r["attempts"]) for r in listed] == [
        (bad, 1, False, 3), (bad, 2, True, 0),
    ]  # fmt: skip
    assert await rows(conn, "SELECT next_offset FROM projection_offsets") == [(102,)]


async def test_a_redelivered_batch_changes_nothing_and_quarantines_nothing_again(
    conn: AsyncConnection[Any],
) -> None:
    notes = Notes()
    events, _, _ = batch_with_one_poison()
    isolator = Isolator(notes.projection, "e1", pause=0)
    await isolator.apply(conn, events)
    again = await isolator.apply(conn, events)
    assert (again.applied, again.quarantined) == (0, 0)
    assert len(await quarantine.listing(conn, "notes")) == 2


async def test_after_the_fix_a_replay_applies_the_subject_in_order_and_unblocks_it(
    conn: AsyncConnection[Any],
) -> None:
    notes = Notes()
    events, bad, _ = batch_with_one_poison()
    isolator = Isolator(notes.projection, "e1", pause=0)
    await isolator.apply(conn, events)
    assert (await isolation.replay(conn, notes.projection)).still_failing != {}  # not fixed yet

    notes.fixed = True
    replayed = await isolation.replay(conn, notes.projection)

    assert len(replayed.replayed) == 2 and replayed.still_failing == {}
    query = "SELECT sequence, body FROM notes WHERE subject = %s ORDER BY sequence"
    assert await rows(conn, query, bad) == [(1, "n"), (2, "after the poison")]
    assert await quarantine.listing(conn, "notes") == []
    later = await isolator.apply(conn, [note(bad, 3, "flows again", 102)])
    assert later.applied == 1


async def test_a_discarded_event_lets_the_held_ones_be_replayed(conn: AsyncConnection[Any]) -> None:
    notes = Notes()
    events, bad, _ = batch_with_one_poison()
    await Isolator(notes.projection, "e1", pause=0).apply(conn, events)
    failed = [r["id"] for r in await quarantine.listing(conn, "notes") if not r["held"]]

    assert await isolation.discard(conn, failed) == 1
    assert (await isolation.replay(conn, notes.projection)).still_failing == {}
    assert await rows(conn, "SELECT sequence FROM notes WHERE subject = %s", bad) == [(2,)]
    resolutions = [r["resolution"] for r in await quarantine.listing(conn, "notes", True)]
    assert resolutions == ["discarded", "replayed"]


async def test_a_database_error_is_not_blamed_on_the_event(conn: AsyncConnection[Any]) -> None:
    notes = Notes()

    async def database_gone(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    notes.projection.every_event = database_gone
    with pytest.raises(psycopg.OperationalError):
        await Isolator(notes.projection, "e1", pause=0).apply(conn, [note("s", 1, "x", 0)])
    assert await quarantine.listing(conn, "notes") == []


async def test_a_rebuild_closes_the_quarantine(conn: AsyncConnection[Any]) -> None:
    notes = Notes()
    events, _, _ = batch_with_one_poison()
    await Isolator(notes.projection, "e1", pause=0).apply(conn, events)
    await rebuild(conn, notes.projection)
    assert await quarantine.listing(conn, "notes") == []
    assert {r["resolution"] for r in await quarantine.listing(conn, "notes", True)} == {"rebuilt"}


def test_printable_escapes_what_a_text_column_or_a_log_cannot_take() -> None:
    assert quarantine.printable("a\x00b\x1bc\ud800") == "a\\x00b\\x1bc\\ud800"
    assert quarantine.printable("x" * 5000, 10) == "x" * 10
