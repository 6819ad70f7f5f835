"""The event store: eventsourcing Applications on PostgreSQL, and the metadata each event carries.

Command metadata (correlation id, causation id, W3C traceparent, actor) is not domain state, so
the aggregates never see it: the gateway puts it in a context variable and the transcoder writes
it beside the event's state under ``__meta__`` in the same row, in the same transaction. The relay
reads it back out to fill the CloudEvents headers.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder
from psycopg.sql import SQL, Identifier

A = TypeVar("A", bound=Application[Any])
META_KEY = "__meta__"
_meta: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "gpucloud_event_meta", default=None
)


@contextmanager
def event_metadata(**meta: str | None) -> Iterator[None]:
    """Every event saved inside this block records ``meta`` (None values dropped)."""
    token = _meta.set({k: v for k, v in meta.items() if v is not None})
    try:
        yield
    finally:
        _meta.reset(token)


class MetadataTranscoder(JSONTranscoder):
    """JSON transcoder that stores the current command metadata beside each event's state.

    Decoding sets the metadata aside (per thread) instead of parsing the row twice: the
    relay reads it with ``last_meta()`` right after the mapper decoded the event.
    """

    _decoded = threading.local()

    @classmethod
    def last_meta(cls) -> dict[str, str]:
        meta: dict[str, str] = getattr(cls._decoded, "meta", {})
        return meta

    def encode(self, obj: Any) -> bytes:
        meta = _meta.get()
        if meta and isinstance(obj, dict):
            obj = {**obj, META_KEY: meta}
        return super().encode(obj)

    def decode(self, data: bytes) -> Any:
        decoded = super().decode(data)
        if isinstance(decoded, dict):
            self._decoded.meta = decoded.pop(META_KEY, {})
        return decoded


def postgres_env(
    database_url: str, schema: str = "public", connect_timeout: int = 2
) -> dict[str, str]:
    """eventsourcing settings for PostgreSQL, spelled out: without PERSISTENCE_MODULE the
    library silently keeps events in memory. POSTGRES_ENABLE_DB_FUNCTIONS stays off: with
    concurrent writers it lets notification-log readers skip events."""
    url = urlparse(database_url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "TRANSCODER_TOPIC": f"{__name__}:MetadataTranscoder",
        "POSTGRES_DBNAME": unquote(url.path.lstrip("/")) or "postgres",
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": unquote(url.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(url.password or ""),
        "POSTGRES_SCHEMA": schema,
        "POSTGRES_POOL_SIZE": "2",
        "POSTGRES_MAX_OVERFLOW": "4",
        "POSTGRES_CONNECT_TIMEOUT": str(connect_timeout),
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        "CREATE_TABLE": "y",
    }


def open_app(cls: type[A], database_url: str, schema: str, connect_timeout: int = 2) -> A:
    return cls(env=postgres_env(database_url, schema, connect_timeout))


def save_together(parts: Sequence[tuple[Application[Any], Sequence[Any]]]) -> None:
    """Save aggregates of several applications in one PostgreSQL transaction.

    eventsourcing saves one application's aggregates per transaction; a usage window (the
    Allocation's ``billed_through`` and the Ledger's posting) must commit together or not at
    all. The applications share one database, so this takes each one's events table lock (the
    same EXCLUSIVE lock its own saves take, which keeps notification ids in commit order for
    the relay), in the order of the applications' names so joint saves never deadlock, and
    inserts every event in one transaction. A lost race is eventsourcing's IntegrityError, as
    with a plain save.
    """
    ordered = sorted(
        ((app, [e for a in aggs for e in a.collect_events()]) for app, aggs in parts),
        key=lambda part: part[0].name,
    )
    batches = [(app, [app.mapper.to_stored_event(e) for e in events]) for app, events in ordered]
    batches = [(app, stored) for app, stored in batches if stored]
    if not batches:
        return
    with batches[0][0].recorder.datastore.transaction(commit=True) as curs:  # type: ignore[attr-defined]
        for app, stored in batches:
            recorder: Any = app.recorder
            for statement in recorder.lock_table_statements:
                curs.execute(statement)
            curs.executemany(
                SQL(
                    "INSERT INTO {}.{} (originator_id, originator_version, topic, state) "
                    "VALUES (%s, %s, %s, %s)"
                ).format(
                    Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name)
                ),
                [(s.originator_id, s.originator_version, s.topic, s.state) for s in stored],
            )
