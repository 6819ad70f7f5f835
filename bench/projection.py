"""Benchmark: projections.runner.apply_batch on the tenants read model, against raw inserts.

    .venv/bin/python bench/projection.py [--events 20000] [--rounds 3]

Real PostgreSQL from DATABASE_URL (default: the local server), a fresh schema migrated with
infra.db.migrate and dropped at the end. Batches of 1000 tenant-created envelopes, as the
projector receives them; the baseline inserts the same rows into a table shaped like
``tenants`` with executemany, one transaction per 1000. Every variant runs once per round
on fresh tables, interleaved; the best round counts.
Prints rates and ratios; never asserts a timing.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any
from uuid import uuid4

import harness  # first: puts the repository root on sys.path
from harness import Stopwatch, console, report
from psycopg import AsyncConnection

from infra.db import conninfo, migrate
from infra.messages.names import TENANT_TOPIC
from projections.envelope import Envelope
from projections.runner import Projection, apply_batch
from projections.tenants import TENANTS

BATCH = 1000
PARTITIONS = 3
CE_TYPE = "cloud.gpu.tenant.created.v1"
INSERT = "INSERT INTO {} (id, name, created_at, version, trace_id) VALUES (%s, %s, %s, %s, %s)"
Conn = AsyncConnection[Any]
Applier = Callable[[Conn, Projection, str, Sequence[Envelope]], Awaitable[int]]
Variant = Callable[[Conn, Sequence[Envelope]], Awaitable[float]]


def envelopes(events: int) -> list[Envelope]:
    """Tenant-created events with random ids, spread over the topic's partitions."""
    now = datetime.now(UTC).isoformat()
    out = []
    for i in range(events):
        tenant = str(uuid4())
        trace = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
        data = {"schema_version": 1, "tenant_id": tenant, "name": f"t{i}", "created_at": now}
        partition, offset = i % PARTITIONS, i // PARTITIONS
        out.append(
            Envelope(TENANT_TOPIC, partition, offset, CE_TYPE, tenant, 1, tenant, data, trace)
        )
    return out


def batches(items: Sequence[Envelope]) -> list[Sequence[Envelope]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


def row(env: Envelope) -> tuple[Any, ...]:
    data = env.data
    return data["tenant_id"], data["name"], data["created_at"], env.sequence, env.trace_id


async def plain_inserts(conn: Conn, items: Sequence[Envelope]) -> float:
    """The baseline: executemany into a table like ``tenants``, one transaction per batch."""
    with Stopwatch() as clock:
        for batch in batches(items):
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(INSERT.format("plain"), [row(e) for e in batch])
    return clock.seconds


async def drive(conn: Conn, items: Sequence[Envelope], apply: Applier) -> float:
    epoch = f"bench-{secrets.token_hex(4)}"
    with Stopwatch() as clock:
        for batch in batches(items):
            await apply(conn, TENANTS, epoch, batch)
    return clock.seconds


async def redelivered(conn: Conn, items: Sequence[Envelope]) -> float:
    """Every event a second time: the (subject, sequence) marks make it a no-op."""
    await drive(conn, items, apply_batch)
    return await drive(conn, items, apply_batch)


VARIANTS: dict[str, Variant] = {
    "baseline: executemany INSERT": plain_inserts,
    "apply_batch": partial(drive, apply=apply_batch),
    "apply_batch, all redelivered": redelivered,
}


async def fresh_tables(conn: Conn) -> None:
    await conn.execute("TRUNCATE plain, tenants, projection_subjects, projection_offsets")


async def check(conn: Conn, label: str, events: int) -> None:
    table = "plain" if label.startswith("baseline") else "tenants"
    row = await (await conn.execute(f"SELECT count(*) FROM {table}")).fetchone()
    if not row or row[0] != events:
        console.print(f"[red]  {label}: {table} has {row and row[0]} rows, not {events}[/]")


async def measure(conn: Conn, events: int, rounds: int) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {label: [] for label in VARIANTS}
    with harness.progress() as bar:
        task = bar.add_task("rounds x variants", total=rounds * len(VARIANTS))
        for _ in range(rounds):
            items = envelopes(events)
            for label, variant in VARIANTS.items():
                await fresh_tables(conn)
                seconds[label].append(await variant(conn, items))
                await check(conn, label, events)
                bar.advance(task)
    return seconds


async def run(events: int, rounds: int) -> None:
    url = harness.database_url()
    with harness.fresh_schema(url) as schema:
        migrate(url, schema)
        console.print(f"schema {schema}: {events} events, batches of {BATCH}, best of {rounds}")
        async with await AsyncConnection.connect(conninfo(url, schema), autocommit=True) as conn:
            await conn.execute("CREATE TABLE plain (LIKE tenants INCLUDING ALL)")
            seconds = await measure(conn, events, rounds)
    base = events / min(seconds["baseline: executemany INSERT"])
    rates = {label: report(label, events, min(s), base) for label, s in seconds.items()}
    console.print(
        f"[bold]projection[/] apply_batch: {rates['apply_batch']:,.0f} events/s, "
        f"{rates['apply_batch'] / base:.2f}x the executemany baseline ({base:,.0f} events/s); "
        "target >= 30,000 events/s"
    )


def main() -> None:
    args = harness.parser(__doc__.splitlines()[0], 20_000)
    args.add_argument("--rounds", type=int, default=3, help="rounds; the best counts (3)")
    ns = args.parse_args()
    asyncio.run(run(ns.events, ns.rounds))


if __name__ == "__main__":
    main()
