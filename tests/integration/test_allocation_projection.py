"""The allocation projections against real PostgreSQL, fed the wire payloads of real Allocation
aggregates: rows fold to the aggregate's state, every delivery counts once, the saga's inbox
is due exactly when a step is wanted and leased to one taker, and reads stay in their tenant."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import zip_longest
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import AsyncConnection

from domain.allocation import Allocation
from infra.db import conninfo, migrate
from infra.messages.compute import ALLOCATION_TOPIC, COMPUTE_WIRE
from projections import allocation_queries as q
from projections.allocations import ALLOCATIONS, DEPLETIONS, get_allocation, list_usage
from projections.catalog import NODES, placement_candidates
from projections.envelope import Envelope
from projections.pagination import InvalidPageRequestError, PageRequest
from projections.runner import Projection, apply_batch

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 28, 12, 0, 30, 250_000, tzinfo=UTC)
END = NOW + timedelta(minutes=2, seconds=5)
LEDGER, NODE = "ledger.ledger.v1", "inventory.node.v1"


@pytest.fixture
async def conn(database_url: str, schema: str) -> AsyncIterator[AsyncConnection[Any]]:
    migrate(database_url, schema)
    async with await connect(database_url, schema) as conn:
        yield conn


async def connect(database_url: str, schema: str) -> AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(conninfo(database_url, schema), autocommit=True)


def requested(tenant: UUID | None = None, gpus: int = 2) -> Allocation:
    return Allocation.request(
        uuid4(), tenant or uuid4(), uuid4(), "eu-west-1", gpus, 2_000_000, "job", "h", NOW,
        deadline_seconds=300, hold_id="hold-1",
    )  # fmt: skip


def running(tenant: UUID | None = None) -> Allocation:
    allocation = requested(tenant)
    allocation.reserve(uuid4(), (0, 1), NOW)
    allocation.start_provisioning(NOW)
    allocation.mark_running(NOW + timedelta(seconds=10))
    return allocation


def bill(allocation: Allocation, until: datetime) -> None:
    for window in allocation.due_windows(until):
        allocation.bill(window, window.amount - 1, f"usage:{window.start.isoformat()}", until)


def released(tenant: UUID | None = None) -> Allocation:
    """Ran, asked to stop, billed to the end, one failed release, then released and settled."""
    allocation = running(tenant)
    allocation.release("tenant asked", END)
    bill(allocation, END)
    allocation.release_failed("node did not answer", END)
    allocation.release("retry", END)
    allocation.confirm_released(END + timedelta(seconds=3))
    allocation.settle(END + timedelta(seconds=3))
    return allocation


def envelopes(allocation: Allocation) -> list[Envelope]:
    """The allocation's new events as the projector receives them (wire payloads)."""
    out = []
    for event in allocation.collect_events():
        wire = COMPUTE_WIRE[type(event)]
        subject, tenant = str(event.originator_id), str(wire.tenant_of(event))
        data = wire.payload(event).model_dump(mode="json")
        version = event.originator_version
        out.append(Envelope(ALLOCATION_TOPIC, -1, -1, wire.ce_type, subject, version, tenant, data))
    return out


def interleaved(*streams: Sequence[Envelope]) -> list[Envelope]:
    """One event of each allocation in turn: runs of one type span several allocations."""
    return [e for group in zip_longest(*streams) for e in group if e is not None]


async def apply(conn: AsyncConnection[Any], projection: Projection, events: list[Envelope]) -> int:
    return await apply_batch(conn, projection, "test", events)


async def rows(conn: AsyncConnection[Any], query: str, *params: Any) -> list[tuple[Any, ...]]:
    cur = await conn.execute(query, params)
    return await cur.fetchall()


async def snapshot(conn: AsyncConnection[Any]) -> list[list[tuple[Any, ...]]]:
    return [
        await rows(conn, f"SELECT * FROM {table} ORDER BY 1, 2")
        for table in ("allocations", "usage_windows", "allocation_work")
    ]


async def test_a_lifecycle_applied_in_batches_folds_to_the_aggregates_state(
    conn: AsyncConnection[Any],
) -> None:
    one, two = released(), released()
    first, second = envelopes(one), envelopes(two)
    await apply(conn, ALLOCATIONS, interleaved(first[:5], second[:7]))
    await apply(conn, ALLOCATIONS, interleaved(first[5:], second[7:]))

    for allocation in (one, two):
        row = await get_allocation(conn, allocation.id, allocation.tenant_id)
        assert row is not None
        expected = {
            "state": "released", "settled": True, "version": 12, "cost_micro": allocation.cost,
            "billed_through": END.replace(microsecond=0), "started_at": allocation.started_at,
            "billing_ends_at": END.replace(microsecond=0), "released_at": allocation.released_at,
            "node_id": allocation.node_id, "gpu_indices": [0, 1], "gpu_count": 2,
            "hold_id": "hold-1", "deadline_at": allocation.deadline, "release_reason": "retry",
            "failure_detail": "node did not answer", "price_per_gpu_hour": 2_000_000,
            "created_at": NOW,
        }  # fmt: skip
        assert {k: row[k] for k in expected} == expected
    usage = await rows(
        conn, "SELECT sum(taken), count(*) FROM usage_windows WHERE allocation_id = %s", one.id
    )
    assert usage == [(one.cost, 3)]
    work = "SELECT state, due_at FROM allocation_work WHERE allocation_id = %s"
    assert await rows(conn, work, one.id) == [("released", None)]
    assert await get_allocation(conn, one.id, uuid4()) is None  # another tenant's reads as missing


async def test_a_redelivered_or_replayed_batch_changes_nothing(conn: AsyncConnection[Any]) -> None:
    batch = envelopes(released())
    assert await apply(conn, ALLOCATIONS, batch) == len(batch)
    before = await snapshot(conn)

    assert await apply(conn, ALLOCATIONS, batch) == 0  # skipped by the runner's marks
    await conn.execute("DELETE FROM projection_subjects")  # a replay the marks do not stop
    assert await apply(conn, ALLOCATIONS, batch) == len(batch)

    assert await snapshot(conn) == before


async def test_the_same_window_billed_twice_counts_once(conn: AsyncConnection[Any]) -> None:
    allocation = running()
    allocation.release("done", END)
    bill(allocation, END)
    batch = envelopes(allocation)
    last_window = batch[-1]
    again = replace(last_window, sequence=last_window.sequence + 1)
    await apply(conn, ALLOCATIONS, [*batch, again])
    await apply(conn, ALLOCATIONS, [replace(last_window, sequence=last_window.sequence + 2)])

    row = await get_allocation(conn, allocation.id, None)
    assert row is not None
    assert (row["cost_micro"], row["version"]) == (allocation.cost, last_window.sequence + 2)
    assert await rows(conn, "SELECT count(*) FROM usage_windows") == [(3,)]


async def test_work_is_due_exactly_when_a_saga_step_is_wanted(conn: AsyncConnection[Any]) -> None:
    fresh, runs, releasing = requested(), running(), running()
    releasing.release("done", END)
    settled, unsettled = requested(), requested()
    for allocation in (settled, unsettled):
        allocation.fail("no_capacity", "none free", NOW)
    settled.settle(NOW)
    everything = [fresh, runs, releasing, settled, unsettled]
    await apply(conn, ALLOCATIONS, interleaved(*map(envelopes, everything)))

    taken = await q.take_due_work(conn, 10, 60)
    assert sorted(taken) == sorted(
        [(fresh.id, "requested"), (releasing.id, "releasing"), (unsettled.id, "failed")]
    )
    assert await q.take_due_work(conn, 10, 60) == []  # leased
    attempts = "SELECT allocation_id, attempts FROM allocation_work WHERE due_at IS NOT NULL"
    assert sorted(await rows(conn, attempts)) == sorted((i, 1) for i, _ in taken)

    fresh.reserve(uuid4(), (0,), NOW)  # a new state: due at once, attempts start again
    bill(releasing, END)  # same state: the lease stands
    await apply(conn, ALLOCATIONS, [*envelopes(fresh), *envelopes(releasing)])
    assert await q.take_due_work(conn, 10, 60) == [(fresh.id, "reserved")]
    assert (fresh.id, 1) in await rows(conn, attempts)


async def test_a_failing_step_backs_off_and_the_allocation_says_why(
    conn: AsyncConnection[Any],
) -> None:
    stuck = running()
    stuck.release("done", END)
    await apply(conn, ALLOCATIONS, envelopes(stuck))
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


async def test_a_taker_skips_rows_another_holds(
    conn: AsyncConnection[Any], database_url: str, schema: str
) -> None:
    allocations = [requested() for _ in range(6)]
    await apply(conn, ALLOCATIONS, [e for a in allocations for e in envelopes(a)])

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
    await apply(conn, ALLOCATIONS, [e for a in allocations for e in envelopes(a)])

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


async def test_usage_pages_in_order_and_stays_in_its_tenant(conn: AsyncConnection[Any]) -> None:
    tenant = uuid4()
    mine, also_mine, theirs = released(tenant), released(tenant), released()
    await apply(conn, ALLOCATIONS, interleaved(*map(envelopes, (mine, also_mine, theirs))))

    seen, cursor = [], None
    while True:
        page = await list_usage(conn, PageRequest(tenant, limit=4, cursor=cursor))
        seen += page.items
        if (cursor := page.next_cursor) is None:
            break
    assert len(seen) == 6 and {r["tenant_id"] for r in seen} == {tenant}
    assert [r["window_start"] for r in seen] == sorted(r["window_start"] for r in seen)
    assert {r["gpus"] for r in seen} == {2} and sum(r["taken"] for r in seen) == mine.cost * 2

    only = await list_usage(conn, PageRequest(tenant, {"allocation_id": mine.id}))
    assert {r["allocation_id"] for r in only.items} == {mine.id} and len(only.items) == 3
    other = await list_usage(conn, PageRequest(tenant, {"allocation_id": theirs.id}))
    assert other.items == []
    with pytest.raises(InvalidPageRequestError):
        await list_usage(conn, PageRequest(tenant, {"tenant_id": theirs.tenant_id}))


async def test_workers_see_what_runs_and_what_to_bill(conn: AsyncConnection[Any]) -> None:
    tenant = uuid4()
    runs, waiting, done = running(tenant), requested(tenant), released(tenant)
    unbilled = running(tenant)
    unbilled.release("done", END)  # billing ended, its windows not billed yet
    never_ran = requested(tenant)
    never_ran.fail("no_capacity", "none free", NOW)
    everything = (runs, waiting, done, unbilled, never_ran)
    await apply(conn, ALLOCATIONS, interleaved(*map(envelopes, everything)))

    assert await q.running_allocations(conn, tenant) == [runs.id]
    assert await q.running_allocations(conn, uuid4()) == []
    later = END + timedelta(minutes=1)  # runs has closed minutes to bill by then
    due = await q.billable_allocations(conn, 10, later)
    assert sorted(a for _, a in due) == sorted([runs.id, unbilled.id])
    assert await q.billable_allocations(conn, 10, later, after=due[0]) == due[1:]
    assert [a for _, a in await q.billable_allocations(conn, 10, NOW)] == [unbilled.id]


async def test_a_depletion_is_recorded_once_whatever_the_delivery(
    conn: AsyncConnection[Any],
) -> None:
    tenant, ledger = uuid4(), uuid4()

    def ledger_event(kind: str, sequence: int) -> Envelope:
        data = {"ledger_id": str(ledger), "tenant_id": str(tenant), "at": NOW.isoformat()}
        ce_type = f"cloud.gpu.ledger.{kind}.v1"
        return Envelope(LEDGER, -1, -1, ce_type, str(ledger), sequence, str(tenant), data)

    batch = [ledger_event("debited", 4), ledger_event("balance_depleted", 5)]
    await apply(conn, DEPLETIONS, batch)
    await apply(conn, DEPLETIONS, batch)
    await conn.execute("DELETE FROM projection_subjects")
    await apply(conn, DEPLETIONS, batch)

    assert await q.pending_depletions(conn) == [(tenant, 5)]
    await q.mark_depletion_handled(conn, tenant, 5)
    assert await q.pending_depletions(conn) == []


async def test_placement_prefers_the_tightest_active_node(conn: AsyncConnection[Any]) -> None:
    def node(sequence: int, node_id: UUID, kind: str, **data: Any) -> Envelope:
        payload = {"node_id": str(node_id), "at": NOW.isoformat(), **data}
        ce_type = f"cloud.gpu.node.{kind}.v1"
        return Envelope(NODE, -1, -1, ce_type, str(node_id), sequence, "", payload)

    def registered(node_id: UUID, gpus: int, model: str = "H100") -> Envelope:
        return node(
            1, node_id, "registered", region="eu-west-1", gpu_model=model, gpu_count=gpus,
            labels={}, driver="local", address=None,
        )  # fmt: skip

    big, small, tiny, drained, other = (uuid4() for _ in range(5))
    await apply(conn, NODES, [
        registered(big, 8), registered(small, 4), registered(tiny, 1), registered(drained, 2),
        registered(other, 2, "A100"), node(2, drained, "state_changed", state="draining"),
    ])  # fmt: skip

    assert await placement_candidates(conn, "eu-west-1", "H100", 2) == [small, big]
    assert await placement_candidates(conn, "us-east-1", "H100", 1) == []
