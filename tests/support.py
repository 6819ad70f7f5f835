"""Helpers for tests that run real processes: waits on conditions, consumers, servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition

from gateways import processes
from gateways.http.app import create_app
from infra.bootstrap import build_system
from infra.embedded import free_port
from infra.settings import Settings
from infra.topics import partition_counts


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 15.0, every: float = 0.05
) -> Any:
    """Wait until ``check()`` returns something truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


async def read_topic(bootstrap: str, topic: str, partitions: int, want: int) -> list[Any]:
    """Read ``topic`` from the beginning until ``want`` records arrived (or 15 s passed).

    A topic that does not exist yet reads as empty at once: a consumer assigned to it before
    it exists may wait out its whole deadline on Tansu.
    """
    if (await partition_counts(bootstrap, [topic]))[topic] == 0:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    records: list[Any] = []
    deadline = time.monotonic() + 15
    try:
        while len(records) < want and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


@contextlib.asynccontextmanager
async def roles(settings: Settings, *names: str) -> AsyncIterator[asyncio.Event]:
    """Run process roles (relay, projector, worker) as tasks of this event loop."""
    stop = asyncio.Event()
    runners = {
        "relay": processes.run_relay,
        "projector": processes.run_projector,
        "worker": processes.run_worker,
    }
    tasks = [asyncio.create_task(runners[n](settings, stop)) for n in names]
    try:
        yield stop
    finally:
        stop.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]


@contextlib.asynccontextmanager
async def api_server(settings: Settings) -> AsyncIterator[str]:
    """The real API on a real socket, for httpx to call."""
    port = free_port()
    app = create_app(build_system(settings))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def role_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "GPUCLOUD_DB_SCHEMA": settings.db_schema,
        "GPUCLOUD_BROKER_EPOCH": settings.broker_epoch,
        **extra,
    }


def gpucloud(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the `gpucloud` CLI against this test's system, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "gateways.cli", *args],
        env=role_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


@dataclass(frozen=True)
class Stack:
    """The API on a socket with the relay and the projector running: what a client sees."""

    url: str
    http: httpx.AsyncClient


@contextlib.asynccontextmanager
async def running_stack(settings: Settings) -> AsyncIterator[Stack]:
    async with (
        api_server(settings) as url,
        roles(settings, "relay", "projector"),
        httpx.AsyncClient(base_url=url) as http,
    ):
        yield Stack(url, http)
