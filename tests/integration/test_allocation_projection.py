"""The allocation projections against real PostgreSQL, fed the wire payloads of real Allocation
aggregates: rows fold to the aggregate's state, every delivery counts once, and reads stay in
their tenant. (The process managers' inbox is no read model: tests/integration/test_inboxes.py.)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from itertools import zip_longest
from typing import Any
from uuid import UUID, uuid4

import pytest
from psycopg import AsyncConnection

from domain.allocation import Allocation
from infra.messages.compute import ALLOCATION_TOPIC, COMPUTE_WIRE
from projections.allocations import ALLOCATIONS, get_allocation, list_usage
from projections.catalog import NODES, placement_candidates
from projections.envelope import Envelope
from projections.pagination import InvalidPageRequestError, PageRequest
from projections.runner import Projection, apply_batch
from tests.integration.allocation_states import END, NOW, bill, released, running

pytestmark = pytest.mark.integration
LEDGER, NODE = "ledger.ledger.v1", "inventory.node.v1"


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
        for table in ("allocations", "usage_windows")
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
