"""Projections against real PostgreSQL and Tansu: exactly-once effects, dedupe, rebuild."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import psycopg
import pytest

from gateways.processes import relays_for
from infra.bootstrap import build_system
from infra.settings import Settings
from tests.integration.test_relay import store_tenants
from tests.support import eventually, role_env, roles

pytestmark = pytest.mark.integration


def query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.database_url or "") as conn:
        conn.execute(f"SET search_path TO {settings.db_schema}")
        return conn.execute(sql).fetchall()


async def publish_all(settings: Settings, count: int) -> list[str]:
    system = build_system(settings)
    await system.open()
    ids = store_tenants(system, count)
    relay = relays_for(system)[0]  # identity
    while await relay.publish_pending():
        pass
    await relay.close()
    await system.close()
    return ids


async def test_a_projector_killed_between_apply_and_commit_applies_exactly_once(
    settings: Settings,
) -> None:
    ids = await publish_all(settings, 3)
    killed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateways.cli", "projector"],
        env=role_env(settings, GPUCLOUD_FAULT="projection.before_commit"),
        timeout=60,
        capture_output=True,
    )
    assert killed.returncode == 17, killed.stderr.decode()[-2000:]
    assert query(settings, "SELECT count(*) FROM tenants") == [(0,)]
    assert query(settings, "SELECT count(*) FROM projection_offsets") == [(0,)]

    async with roles(settings, "projector"):

        async def all_there() -> bool:
            return query(settings, "SELECT count(*) FROM tenants") == [(3,)]

        await eventually(all_there)

    rows = query(settings, "SELECT id::text, version FROM tenants ORDER BY id")
    assert rows == sorted((i, 1) for i in ids)
    [(next_total,)] = query(
        settings, "SELECT sum(next_offset) FROM projection_offsets WHERE projection = 'tenants'"
    )
    assert next_total == 3


async def test_redelivered_events_are_skipped_by_subject_and_sequence(settings: Settings) -> None:
    await publish_all(settings, 4)
    system = build_system(settings)
    await system.open()
    relay = relays_for(system)[0]  # identity
    await relay.positions.reset(0)  # the relay forgets: everything goes out a second time
    async with roles(settings, "projector"):
        while await relay.publish_pending():
            pass

        async def caught_up() -> bool:
            rows = query(
                settings,
                "SELECT sum(next_offset) FROM projection_offsets WHERE projection = 'tenants'",
            )
            return rows == [(8,)]

        await eventually(caught_up)
    await relay.close()
    await system.close()

    assert query(settings, "SELECT count(*) FROM tenants") == [(4,)]
    assert query(settings, "SELECT max(sequence) FROM projection_subjects") == [(1,)]


async def test_rebuild_replays_the_read_model_from_the_event_store(settings: Settings) -> None:
    ids = await publish_all(settings, 5)
    query(settings, "SELECT 1")
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        conn.execute(f"DELETE FROM {settings.db_schema}.tenants WHERE id = %s", (ids[0],))

    rebuilt = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateways.cli", "projections", "rebuild", "tenants", "--json"],
        env=role_env(settings),
        timeout=60,
        capture_output=True,
        text=True,
    )

    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert '"applied": 5' in rebuilt.stdout
    assert query(settings, "SELECT count(*) FROM tenants") == [(5,)]


async def test_rebuild_of_an_unknown_projection_is_a_clear_cli_error(settings: Settings) -> None:
    answer = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateways.cli", "projections", "rebuild", "nope"],
        env=role_env(settings),
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert answer.returncode == 2
    assert "no projection named 'nope'" in answer.stderr
    assert "tenants" in answer.stderr


async def test_a_restarted_projector_seeks_to_the_offsets_it_saved(settings: Settings) -> None:
    from infra.metrics import PROJECTION_APPLIED, PROJECTION_SKIPPED

    def counted() -> tuple[float, float]:
        return (
            PROJECTION_APPLIED.labels("tenants")._value.get(),
            PROJECTION_SKIPPED.labels("tenants")._value.get(),
        )

    await publish_all(settings, 6)
    before = counted()
    async with roles(settings, "projector"):

        async def caught_up() -> bool:
            return query(
                settings,
                "SELECT sum(next_offset) FROM projection_offsets WHERE projection = 'tenants'",
            ) == [(6,)]

        await eventually(caught_up)
    first = counted()
    await publish_all(settings, 1)
    async with roles(settings, "projector"):

        async def seventh() -> bool:
            return query(settings, "SELECT count(*) FROM tenants") == [(7,)]

        await eventually(seventh)
    second = counted()

    assert (first[0] - before[0], first[1] - before[1]) == (6, 0)
    assert (second[0] - first[0], second[1] - first[1]) == (1, 0)  # the six were not re-read
