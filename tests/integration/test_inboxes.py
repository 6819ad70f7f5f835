"""The process managers' inbox against real PostgreSQL: rows come from the aggregates (due
exactly when a saga step is wanted, leased to one taker, backed off on failure), the worker's
follow of the compute and ledger logs writes each once with its position, and a rebuild of the
allocations read model touches none of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from psycopg import AsyncConnection

from domain.allocation import Allocation
from infra import inboxes as q
from infra.bootstrap import System
from infra.inboxes import WorkRow, record_work
from projections.allocations import ALLOCATIONS, get_allocation
from projections.runner import apply_batch, rebuild
from tests.integration.allocation_states import END, NOW, bill, released, requested, running
from tests.integration.allocation_world import stage
from tests.integration.conftest import connect
from tests.integration.test_allocation_projection import envelopes
from workers import allocations as jobs

pytestmark = pytest.mark.integration


async def record(conn: AsyncConnection[Any], *allocations: Allocation) -> None:
    await record_work(conn, [WorkRow.of(a) for a in allocations])


async def rows(conn: AsyncConnection[Any], query: str, *params: Any) -> list[tuple[Any, ...]]:
    return await (await conn.execute(query, params)).fetchall()


ATTEMPTS = "SELECT allocation_id, attempts FROM allocation_work WHERE due_at IS NOT NULL"


async def test_work_is_due_exactly_when_a_saga_step_is_wanted(conn: AsyncConnection[Any]) -> None:
    fresh, runs, releasing = requested(), running(), running()
    releasing.release("done", END)
    settled, unsettled = requested(), requested()
    for allocation in (settled, unsettled):
        allocation.fail("no_capacity", "none free", NOW)
    settled.settle(NOW)
    await record(conn, fresh, runs, releasing, settled, unsettled)

    taken = await q.take_due_work(conn, 10, 60)
    assert sorted(taken) == sorted(
        [(fresh.id, "requested"), (releasing.id, "releasing"), (unsettled.id, "failed")]
    )
    assert await q.take_due_work(conn, 10, 60) == []  # leased
    assert sorted(await rows(conn, ATTEMPTS)) == sorted((i, 1) for i, _ in taken)

    fresh.reserve(uuid4(), (0,), NOW)  # a new state: due at once, attempts start again
    bill(releasing, END)  # same state: the lease stands
    await record(conn, fresh, releasing)
    assert await q.take_due_work(conn, 10, 60) == [(fresh.id, "reserved")]
    assert (fresh.id, 1) in await rows(conn, ATTEMPTS)


async def test_an_older_version_never_overwrites_a_newer_row(conn: AsyncConnection[Any]) -> None:
    allocation = requested()
    older = WorkRow.of(allocation)
    allocation.fail("no_capacity", "none free", NOW)
    allocation.settle(NOW)
    await record(conn, allocation)
    await record_work(conn, [older])  # a slower follower, late
    state = "SELECT state, version, due_at FROM allocation_work WHERE allocation_id = %s"
    assert await rows(conn, state, allocation.id) == [("failed", allocation.version, None)]


async def test_a_failing_step_backs_off_and_the_allocation_says_why(
    conn: AsyncConnection[Any],
) -> None:
    stuck = running()
    stuck.release("done", END)
    await apply_batch(conn, ALLOCATIONS, "test", envelopes(stuck))  # the read model's row
    await record(conn, stuck)
    assert await q.take_due_work(conn, 10, 60) == [(stuck.id, "releasing")]
    await q.back_off_work(conn, stuck.id, "releasing", "node refused: exit 1", 300)

    row = await get_allocation(conn, stuck.id, stuck.tenant_id)
    assert row is not None and (row["step_attempts"], row["step_error"]) == (
        1, "node refused: exit 1"
    )  # fmt: skip
    due = await rows(conn, "SELECT due_at > now() + interval '1 second' FROM allocation_work")
    assert due == [(True,)]  # 2^1 s later at the earliest
    await q.back_off_work(conn, stuck.id, "released", "another state: ignored", 300)
    row = await get_allocation(conn, stuck.id, None)
    assert row is not None and row["step_error"] == "node refused: exit 1"


async def test_a_rebuild_of_the_allocations_read_model_keeps_every_lease_and_backoff(
    conn: AsyncConnection[Any],
) -> None:
    stuck, leased = running(), requested()
    stuck.release("done", END)
    await apply_batch(conn, ALLOCATIONS, "test", [*envelopes(stuck), *envelopes(leased)])
    await record(conn, stuck, leased)
    await q.take_due_work(conn, 10, 60)
    await q.back_off_work(conn, stuck.id, "releasing", "node refused: exit 1", 300)
    everything = "SELECT * FROM allocation_work ORDER BY allocation_id"
    before = await rows(conn, everything)

    await rebuild(conn, ALLOCATIONS)

    assert await rows(conn, "SELECT count(*) FROM allocations") == [(0,)]  # it did rebuild
    assert await rows(conn, everything) == before and len(before) == 2


async def test_a_taker_skips_rows_another_holds(
    conn: AsyncConnection[Any], database_url: str, schema: str
) -> None:
    await record(conn, *(requested() for _ in range(6)))

    async with await connect(database_url, schema) as other:
        async with conn.transaction():  # the first taker has not committed yet
            held = await q.take_due_work(conn, 2, 60)
            rest = await q.take_due_work(other, 10, 60)
        assert len(held) == 2 and len(rest) == 4
        assert not {i for i, _ in held} & {i for i, _ in rest}


async def test_two_concurrent_takers_never_get_the_same_row(
    conn: AsyncConnection[Any], database_url: str, schema: str
) -> None:
    allocations = [requested() for _ in range(60)]
    await record(conn, *allocations)

    async def drain(taker: AsyncConnection[Any]) -> list[UUID]:
        got: list[UUID] = []
        while batch := await q.take_due_work(taker, 3, 60):
            got += [i for i, _ in batch]
        return got

    async with (
        await connect(database_url, schema) as one,
        await connect(database_url, schema) as two,
    ):
        first, second = await asyncio.gather(drain(one), drain(two))
    assert first and second and not set(first) & set(second)
    assert sorted(first + second) == sorted(a.id for a in allocations)


async def test_workers_see_what_runs_and_what_to_bill(conn: AsyncConnection[Any]) -> None:
    tenant = uuid4()
    runs, waiting, done = running(tenant), requested(tenant), released(tenant)
    unbilled = running(tenant)
    unbilled.release("done", END)  # billing ended, its windows not billed yet
    never_ran = requested(tenant)
    never_ran.fail("no_capacity", "none free", NOW)
    await record(conn, runs, waiting, done, unbilled, never_ran)

    assert await q.running_allocations(conn, tenant) == [runs.id]
    assert await q.running_allocations(conn, uuid4()) == []
    later = END + timedelta(minutes=1)  # runs has closed minutes to bill by then
    due = await q.billable_allocations(conn, 10, later)
    assert sorted(a for _, a in due) == sorted([runs.id, unbilled.id])
    assert await q.billable_allocations(conn, 10, later, after=due[0]) == due[1:]
    assert [a for _, a in await q.billable_allocations(conn, 10, NOW)] == [unbilled.id]


# The follow of the notification logs, on a real write side.


@pytest.fixture
async def opened(clocked_system: System) -> AsyncIterator[System]:
    await clocked_system.open()
    yield clocked_system
    await clocked_system.close()


async def test_the_follow_writes_each_allocation_once_from_the_compute_log(
    opened: System,
) -> None:
    world = stage(opened, credit=50_000_000)
    first, second = world.request().id, world.request().id
    opened.compute.fail(second, "no_capacity", "none free", world.clock())

    assert await jobs.follow_compute(opened) > 0
    assert await jobs.follow_compute(opened) == 0  # caught up: nothing read again
    async with opened.pool.connection() as conn:
        got = await rows(
            conn, "SELECT allocation_id, state, version, due_at IS NOT NULL FROM allocation_work"
        )
    expected = {
        (first, "requested", opened.compute.allocation(first).version, True),
        (second, "failed", opened.compute.allocation(second).version, False),  # settled with it
    }
    assert set(got) == expected


async def test_concurrent_follows_write_the_same_rows_as_one(opened: System) -> None:
    world = stage(opened, credit=50_000_000)
    ids = [world.request().id for _ in range(5)]

    reads = await asyncio.gather(*(jobs.follow_compute(opened) for _ in range(4)))

    assert sum(reads) > 0  # the others skipped the locked inbox or found nothing new
    async with opened.pool.connection() as conn:
        got = await rows(conn, "SELECT allocation_id, attempts FROM allocation_work")
        position = await rows(conn, "SELECT position FROM inbox_positions WHERE inbox = 'saga'")
    assert sorted(got) == sorted((i, 0) for i in ids)
    assert position == [(opened.compute.recorder.max_notification_id(),)]


async def test_each_depletion_reaches_the_policy_once(opened: System) -> None:
    now = opened.clock()
    tenant = opened.identity.create_tenant("acme", None, now).tenant.id
    opened.ledgers.credit(tenant, "topup", 1_000, now)
    opened.ledgers.debit(tenant, "use-1", 1_000, now)  # available 0: depleted
    depleted = opened.ledgers.ledger(tenant).version

    assert await jobs.follow_depletions(opened) == 1
    assert await jobs.follow_depletions(opened) == 0
    async with opened.pool.connection() as conn:
        assert await q.pending_depletions(conn) == [(tenant, depleted)]
        await q.mark_depletion_handled(conn, tenant, depleted)
        await conn.execute("UPDATE inbox_positions SET position = 0 WHERE inbox = 'depletions'")
    assert await jobs.follow_depletions(opened) == 1  # read again from the start of the log
    async with opened.pool.connection() as conn:
        assert await q.pending_depletions(conn) == []  # handled stays handled
