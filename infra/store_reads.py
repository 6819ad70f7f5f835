"""The batched store reads of ``handlers.ports.StoreReads`` on PostgreSQL: one query for many
aggregates where the library's API makes one each (billing loads a batch of 200 allocations
and their ledgers; the auditor reads 50 ledgers' streams at a time).

Each query joins the ids to the events table with ``CROSS JOIN LATERAL``: one index range scan
per id, never a scan of the table. Rows are read in binary (bytea as is, not hex text).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent


def table_of(recorder: Any) -> str:
    """A recorder's table, schema-qualified and quoted (names eventsourcing made: no quotes)."""
    return f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'


def _select(recorder: Any, statement: str, params: list[Any]) -> list[StoredEvent]:
    with recorder.datastore.get_connection() as conn, conn.cursor() as cur:
        cur.execute(statement, params, binary=True)
        return [
            StoredEvent(r["originator_id"], r["originator_version"], r["topic"], bytes(r["state"]))
            for r in cur.fetchall()
        ]


def _tuples(_cursor: object) -> type[tuple[Any, ...]]:
    """A psycopg row factory: plain tuples, the cheapest rows to make."""
    return tuple


class PostgresReads:
    def events_after(self, recorder: Any, starts: Sequence[tuple[UUID, int]]) -> list[StoredEvent]:
        statement = (
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            "FROM unnest(%s::uuid[], %s::bigint[]) AS c(id, v) CROSS JOIN LATERAL ("
            f"SELECT * FROM {table_of(recorder)} t WHERE t.originator_id = c.id "
            "AND t.originator_version > c.v ORDER BY t.originator_version) AS e"
        )
        return _select(recorder, statement, [[i for i, _ in starts], [v for _, v in starts]])

    def latest_snapshots(self, recorder: Any, ids: Sequence[UUID]) -> list[StoredEvent]:
        statement = (
            "SELECT s.originator_id, s.originator_version, s.topic, s.state "
            "FROM unnest(%s::uuid[]) AS c(id) CROSS JOIN LATERAL ("
            f"SELECT * FROM {table_of(recorder)} t WHERE t.originator_id = c.id "
            "ORDER BY t.originator_version DESC LIMIT 1) AS s"
        )
        return _select(recorder, statement, [list(ids)])

    def drop_older_snapshots(self, recorder: Any, latest: Sequence[tuple[UUID, int]]) -> None:
        statement = (
            f"DELETE FROM {table_of(recorder)} t USING unnest(%s::uuid[], %s::bigint[]) AS "
            "c(id, v) WHERE t.originator_id = c.id AND t.originator_version < c.v"
        )
        with recorder.datastore.get_connection() as conn:
            conn.execute(statement, [[i for i, _ in latest], [v for _, v in latest]])

    def stream_rows(self, recorder: Any, ids: Sequence[UUID]) -> list[tuple[Any, ...]]:
        statement = (
            "SELECT c.n, e.originator_version, e.topic, e.state "
            "FROM unnest(%s::uuid[]) WITH ORDINALITY AS c(id, n) CROSS JOIN LATERAL ("
            f"SELECT * FROM {table_of(recorder)} t WHERE t.originator_id = c.id "
            "ORDER BY t.originator_version) AS e ORDER BY c.n, e.originator_version"
        )
        with recorder.datastore.get_connection() as conn, conn.cursor(row_factory=_tuples) as cur:
            cur.execute(statement, [list(ids)], binary=True)
            rows: list[tuple[Any, ...]] = cur.fetchall()
        return rows


POSTGRES_READS = PostgresReads()
