"""The event store: eventsourcing Applications on PostgreSQL, and the metadata each event carries.

Command metadata (correlation id, causation id, W3C traceparent, actor) is not domain state, so
the aggregates never see it: the gateway puts it in a context variable and the transcoder writes
it beside the event's state under ``__meta__`` in the same row, in the same transaction. The relay
reads it back out to fill the CloudEvents headers.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse
from uuid import UUID

import orjson
from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder, StoredEvent, Transcoding, UUIDAsHex
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.sql import SQL, Identifier

from handlers.base import ContextApplication
from infra import canonical
from infra.store_reads import POSTGRES_READS

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

    Decoding parses with orjson (2.5x the standard library) and then revives the transcoded
    values bottom-up, as the library's object hook would, with the same transcodings. Where
    orjson would read differently (it turns integers beyond 64 bits into floats, refuses
    NaN), any document holding a float, or that orjson refuses, is parsed by the library's
    decoder instead: the result is the same either way.
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
        try:
            decoded = self._revived(orjson.loads(data))
        except (orjson.JSONDecodeError, _HasFloat):
            decoded = super().decode(data)
        if isinstance(decoded, dict):
            self._decoded.meta = decoded.pop(META_KEY, {})
        return decoded

    def register(self, transcoding: Transcoding) -> None:
        super().register(_UUIDsOnce() if type(transcoding) is UUIDAsHex else transcoding)

    def _revived(self, value: Any) -> Any:
        kind = type(value)
        if kind is dict:
            names = self.names
            for key, item in value.items():
                nested = type(item)
                if nested is dict and len(item) == 2 and type(item.get("_data_")) is str:
                    transcoding = names.get(item.get("_type_"))
                    # a transcoded leaf, the usual case: no recursion (unknown types and
                    # lookalikes go the library's way: its error, or the dict as it is)
                    value[key] = (
                        transcoding.decode(item["_data_"])
                        if transcoding
                        else self._decode_obj(item)
                    )
                elif nested in _NESTED:
                    value[key] = self._revived(item)
            if len(value) == 2 and "_type_" in value and "_data_" in value:
                return self._decode_obj(value)  # the library's own lookup and errors
            return value
        if kind is list:
            return [self._revived(item) for item in value]
        if kind is float:
            raise _HasFloat
        return value


class _UUIDsOnce(UUIDAsHex):
    """UUIDAsHex that builds each distinct UUID once: tenant, node and SKU ids recur in
    event after event, and UUIDs are immutable."""

    def decode(self, data: str) -> UUID:
        return _uuid(data)


@functools.lru_cache(maxsize=65536)
def _uuid(data: str) -> UUID:
    return UUID(data)


class _HasFloat(Exception):
    """A float in a document: orjson may have read it from a big integer; decode again."""


_NESTED = (dict, list, float)


class OneTripRecorder(PostgresApplicationRecorder):
    """The library's PostgreSQL recorder, with a save in one round trip instead of four.

    eventsourcing's save is BEGIN, LOCK TABLE (EXCLUSIVE), NOTIFY, INSERT, COMMIT: on loopback
    each round trip costs as much as the commit itself, so a one-event save took ~3x a plain
    autocommit INSERT. Here a save is one statement, a function (created with the tables, as
    the library creates its own) that takes the same EXCLUSIVE lock and inserts every event;
    in autocommit the statement is its transaction, so the lock is held until the commit and
    notification ids still follow commit order. Nothing listens on the library's NOTIFY
    channel (the relay polls), so none is sent. A version taken by another writer still fails
    the whole save with eventsourcing's IntegrityError.
    """

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        self.insert_function = f"gpucloud_insert_{events_table_name}"
        names = {
            "schema": Identifier(datastore.schema),
            "table": Identifier(events_table_name),
            "function": Identifier(self.insert_function),
        }
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{function}("
                "ids uuid[], versions bigint[], topics text[], states bytea[]) "
                "RETURNS SETOF bigint LANGUAGE plpgsql AS $body$ BEGIN "
                "LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
                "RETURN QUERY INSERT INTO {schema}.{table} "
                "(originator_id, originator_version, topic, state) "
                "SELECT * FROM unnest(ids, versions, topics, states) "
                "RETURNING notification_id; "
                "END; $body$"
            ).format(**names)
        )
        self.insert_call = SQL("SELECT * FROM {schema}.{function}(%b, %b, %b, %b)").format(**names)

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> list[int]:
        if not stored_events:
            return []
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            self.insert_in(curs, stored_events)
            return [row[self.insert_function] for row in curs.fetchall()]

    def insert_in(self, curs: Any, stored_events: Sequence[StoredEvent]) -> None:
        """Execute the insert on ``curs`` (inside the caller's transaction, if it has one).
        Four arrays of plain types, sent in binary: psycopg dumps them ~15x faster than in
        text (bytea arrays are hex-escaped there), and far faster than composite rows."""
        columns = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
        )
        curs.execute(self.insert_call, columns, prepare=True)


def postgres_env(
    database_url: str, schema: str = "public", connect_timeout: int = 2
) -> dict[str, str]:
    """eventsourcing settings for PostgreSQL, spelled out: without PERSISTENCE_MODULE the
    library silently keeps events in memory. POSTGRES_ENABLE_DB_FUNCTIONS stays off: with
    concurrent writers it lets notification-log readers skip events."""
    url = urlparse(database_url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "APPLICATION_RECORDER_TOPIC": f"{__name__}:OneTripRecorder",
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
    canonical.install()  # the ledger's hashes written by orjson, byte for byte the same
    app = cls(env=postgres_env(database_url, schema, connect_timeout))
    if isinstance(app, ContextApplication):
        app.reads = POSTGRES_READS  # many aggregates a query, not one each
    return app


def save_together(parts: Sequence[tuple[Application[Any], Sequence[Any]]]) -> None:
    """Save aggregates of several applications in one PostgreSQL transaction.

    eventsourcing saves one application's aggregates per transaction; a usage window (the
    Allocation's ``billed_through`` and the Ledger's posting) must commit together or not at
    all. The applications share one database, so this takes each one's events table lock (the
    same EXCLUSIVE lock its own saves take, which keeps notification ids in commit order for
    the relay), in the order of the applications' names so joint saves never deadlock, and
    inserts every event in one transaction. A lost race is eventsourcing's IntegrityError,
    as with a plain save.
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
            recorder: OneTripRecorder = app.recorder  # type: ignore[assignment]
            recorder.insert_in(curs, stored)  # takes the table's lock, as its own saves do
