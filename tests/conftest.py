"""Shared fixtures: real PostgreSQL (DATABASE_URL, else embedded) and a real broker (Tansu).

Each test gets its own PostgreSQL schema and its own broker epoch and ids; integration tests
that read topics get a fresh Tansu (it starts in a fraction of a second), so no test sees
another's messages.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from infra.embedded import EmbeddedBroker, EmbeddedPostgres
from infra.settings import Settings
from tests import containers

pytest_plugins = ["tests.contract_plugin", "tests.calendar_plugin"]


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    if containers.wanted():
        with containers.postgres() as url:
            yield url
        return
    folder = Path(tempfile.mkdtemp(prefix="gpucloud-pg-"))
    server = EmbeddedPostgres(folder)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """A folder for embedded servers, outside pytest's own temp root: pytest resets that root
    to mode 0700 whenever a pytest session starts, which would lock the unprivileged
    PostgreSQL user out mid-test if another session ran beside this one."""
    folder = Path(tempfile.mkdtemp(prefix="gpucloud-test-"))
    yield folder
    _kill_instances(folder)
    shutil.rmtree(folder, ignore_errors=True)


def _kill_instances(folder: Path) -> None:
    """Local-driver instances a failed test left running (a passing test released them)."""
    for record in folder.glob("**/instances/*/instance.json"):
        with contextlib.suppress(ValueError, KeyError, ProcessLookupError, PermissionError):
            os.killpg(int(json.loads(record.read_text())["pid"]), signal.SIGKILL)


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    name = f"t_{secrets.token_hex(6)}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def kafka(server_dir: Path) -> Iterator[str]:
    if url := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield url
        return
    broker = EmbeddedBroker(server_dir / "broker")
    (server_dir / "broker").mkdir()
    try:
        yield broker.start()
    finally:
        broker.stop()


@pytest.fixture
def settings(database_url: str, schema: str, kafka: str, server_dir: Path) -> Settings:
    return Settings(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=kafka,
        GPUCLOUD_DB_SCHEMA=schema,
        GPUCLOUD_BROKER_EPOCH=f"test-{secrets.token_hex(4)}",
        GPUCLOUD_DATA_DIR=server_dir / "data",
        GPUCLOUD_RELAY_POLL_SECONDS=0.02,
        GPUCLOUD_AUTH_FAILURE_BURST=100_000,  # tests walk bad keys by the hundred; one tests this
    )


def issue_ops_key(settings: Settings) -> str:
    from datetime import UTC, datetime

    from infra.bootstrap import build_system

    system = build_system(settings)
    try:
        return system.identity.issue_ops_key("tests", datetime.now(UTC)).token
    finally:
        system.close_write_side()


@pytest.fixture
def ops_key(settings: Settings) -> str:
    """A platform ops API key in this test's schema."""
    return issue_ops_key(settings)
