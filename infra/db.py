"""PostgreSQL plumbing for the read side: schema migrations (yoyo) and connection pools."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlencode, urlparse, urlunparse

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from yoyo import get_backend, read_migrations

MIGRATIONS = Path(__file__).parent / "migrations"


def conninfo(database_url: str, schema: str) -> str:
    """A libpq URL whose sessions resolve unqualified names in ``schema``."""
    url = urlparse(database_url)
    query = urlencode({"options": f"-c search_path={schema}"}, quote_via=quote)
    return urlunparse(url._replace(scheme="postgresql", query=query))


def ensure_schema(database_url: str, schema: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


@contextmanager
def schema_lock(database_url: str, schema: str) -> Iterator[None]:
    """Serialise set-up of one schema across processes: eventsourcing re-creates its tables
    and functions on every start, and two processes doing so at once fail with "tuple
    concurrently updated"."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"gpucloud.schema.{schema}",))
        yield  # closing the connection releases the lock


def migrate(database_url: str, schema: str) -> int:
    """Apply pending read-model migrations; returns how many ran."""
    ensure_schema(database_url, schema)
    url = urlparse(database_url)
    yoyo_url = urlunparse(url._replace(scheme="postgresql+psycopg", query=f"schema={schema}"))
    backend = get_backend(yoyo_url)
    migrations = read_migrations(str(MIGRATIONS))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return len(pending)


def signing_key(database_url: str, schema: str) -> bytes:
    """The secret every replica signs cursors and position tokens with (migration 0009)."""
    with psycopg.connect(conninfo(database_url, schema), autocommit=True) as conn:
        row = conn.execute("SELECT value FROM server_secrets WHERE name = 'signing'").fetchone()
    if row is None:
        raise LookupError("no signing secret in server_secrets: the migrations did not run")
    return bytes(row[0])


def async_pool(database_url: str, schema: str, size: int = 4) -> AsyncConnectionPool:
    """An async pool, opened by the caller (``await pool.open()``)."""
    return AsyncConnectionPool(
        conninfo(database_url, schema), min_size=1, max_size=size, open=False, timeout=5
    )
