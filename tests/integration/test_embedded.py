"""Integration tests for infra.embedded: real PostgreSQL and Tansu child processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from infra.embedded import EmbeddedBroker, EmbeddedPostgres

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not psutil.pid_exists(pid)


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        return True
    except OSError:
        return False


def test_postgres_data_survives_restart(server_dir: Path) -> None:
    first = EmbeddedPostgres(server_dir)
    try:
        url = first.start()
        assert url == f"postgresql://postgres@127.0.0.1:{first.port}/gpucloud"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('survives')")
        pid = first.pid
        assert pid is not None
    finally:
        first.stop()
    first.stop()  # idempotent
    assert first.pid is None and not psutil.pid_exists(pid)

    second = EmbeddedPostgres(server_dir)  # a fresh object, as after a process restart
    try:
        with psycopg.connect(second.start()) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [("survives",)]
    finally:
        second.stop()


async def _produce_and_consume(bootstrap: str) -> bytes | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("events", num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait("events", b"hello")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer("events", bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        value: bytes | None = (await asyncio.wait_for(consumer.getone(), 10)).value
        return value
    finally:
        await consumer.stop()


def test_broker_roundtrip_then_stop(server_dir: Path) -> None:
    broker = EmbeddedBroker(server_dir)
    try:
        # start() from a worker thread while a loop runs; that thread is gone afterwards
        bootstrap = asyncio.run(asyncio.to_thread(broker.start))
        assert bootstrap == f"127.0.0.1:{broker.port}"
        assert asyncio.run(_produce_and_consume(bootstrap)) == b"hello"
        pid = broker.pid
        assert pid is not None
    finally:
        broker.stop()
    assert broker.pid is None and not psutil.pid_exists(pid)
    assert broker.port is not None and not _port_open(broker.port)


def _write_stale_pidfile(pgdata: Path, content: str, pid: int) -> None:
    pidfile = pgdata / "postmaster.pid"
    pidfile.write_text("\n".join([str(pid), *content.splitlines()[1:]]) + "\n")
    os.chown(pidfile, pgdata.stat().st_uid, pgdata.stat().st_gid)


def test_stale_postmaster_pid_does_not_block_start(server_dir: Path) -> None:
    pg = EmbeddedPostgres(server_dir)
    pg.start()
    crashed = (pg.pgdata / "postmaster.pid").read_text()
    pg.stop()
    dead = subprocess.Popen(["true"])
    dead.wait()
    unrelated = subprocess.Popen(["sleep", "30"])  # a live pid that is not postgres
    try:
        for pid in (dead.pid, unrelated.pid):
            _write_stale_pidfile(pg.pgdata, crashed, pid)
            with psycopg.connect(pg.start()) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            pg.stop()
        assert unrelated.poll() is None  # left alone
    finally:
        pg.stop()
        unrelated.kill()
        unrelated.wait()


def test_leftover_postgres_on_same_data_dir_is_replaced(server_dir: Path) -> None:
    old, new = EmbeddedPostgres(server_dir), EmbeddedPostgres(server_dir)
    try:
        old.start()
        old_pid = old.pid
        assert old_pid is not None
        with psycopg.connect(new.start()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert new.pid != old_pid and _wait_gone(old_pid)
    finally:
        old.stop()
        new.stop()


_CHILD_SCRIPT = """
import json, sys, time
from pathlib import Path
from infra.embedded import EmbeddedBroker, EmbeddedPostgres
pg, broker = EmbeddedPostgres(Path(sys.argv[1])), EmbeddedBroker(Path(sys.argv[1]))
pg.start(); broker.start()
print(json.dumps([pg.pid, broker.pid]), flush=True)
time.sleep(60)
"""


def test_servers_die_with_a_killed_parent(server_dir: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _CHILD_SCRIPT, str(server_dir)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pids = json.loads(parent.stdout.readline())
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert all(_wait_gone(pid, 15.0) for pid in pids)
    finally:
        parent.kill()
        parent.wait()
    assert "database system is shut down" in (server_dir / "postgres.log").read_text()
