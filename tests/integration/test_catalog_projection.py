"""The catalog projections against real PostgreSQL: runs that touch one row several times fold
to the right answer, and claims count once whatever is delivered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import AsyncConnection

from infra.db import conninfo, migrate
from projections.catalog import NODES, SKUS, get_node, get_sku
from projections.envelope import Envelope
from projections.runner import Projection, apply_batch

pytestmark = pytest.mark.integration
AT = "2026-01-01T00:00:00+00:00"


@pytest.fixture
async def conn(database_url: str, schema: str) -> AsyncIterator[AsyncConnection[Any]]:
    migrate(database_url, schema)
    async with await psycopg.AsyncConnection.connect(
        conninfo(database_url, schema), autocommit=True
    ) as conn:
        yield conn


def event(kind: str, subject: UUID, sequence: int, **data: Any) -> Envelope:
    context = "node" if kind.startswith("node") else "sku"
    payload = {f"{context}_id": str(subject), "at": AT, **data}
    return Envelope(
        f"inventory.{context}.v1",
        -1,
        -1,
        f"cloud.gpu.{kind}.v1",
        str(subject),
        sequence,
        "",
        payload,
    )


def registered(node: UUID, gpus: int) -> Envelope:
    return event(
        "node.registered", node, 1, region="eu-west-1", gpu_model="H100", gpu_count=gpus,
        labels={}, driver="local", address=None,
    )  # fmt: skip


def claim(kind: str, node: UUID, sequence: int, claim_id: str, indices: list[int]) -> Envelope:
    return event(
        f"node.{kind}", node, sequence, claim_id=claim_id, allocation_id=str(uuid4()),
        gpu_indices=indices,
    )  # fmt: skip


async def apply(conn: AsyncConnection[Any], projection: Projection, *events: Envelope) -> None:
    await apply_batch(conn, projection, "test", list(events))


async def test_claims_and_states_fold_per_node_and_count_each_claim_once(
    conn: AsyncConnection[Any],
) -> None:
    one, two = uuid4(), uuid4()
    await apply(
        conn,
        NODES,
        registered(one, 4),
        registered(two, 8),
        claim("capacity_claimed", one, 2, "a", [0]),
        claim("capacity_claimed", one, 3, "b", [1, 2]),
        claim("capacity_claimed", two, 2, "c", [0, 1, 2, 3]),
        event("node.state_changed", two, 3, state="draining"),
        event("node.state_changed", two, 4, state="active"),
        claim("claim_released", one, 4, "never-held", [3]),
        claim("claim_released", one, 5, "a", [0]),
    )
    await apply(conn, NODES, claim("capacity_claimed", one, 6, "b", [1, 2]))  # held already

    first, second = await get_node(conn, one), await get_node(conn, two)
    assert first is not None and second is not None
    assert (first["free_gpus"], first["version"]) == (2, 6)
    assert [(c["claim_id"], c["gpu_indices"]) for c in first["claims"]] == [("b", [1, 2])]
    assert (second["free_gpus"], second["state"], second["version"]) == (4, "active", 4)


async def test_the_latest_price_and_activation_of_a_run_win(conn: AsyncConnection[Any]) -> None:
    sku = uuid4()
    created = event(
        "sku.created", sku, 1, name="1x", gpu_model="H100", gpus=1, vcpus=8, ram_gib=64,
        disk_gib=100, regions=["eu-west-1"], price_per_gpu_hour=1_000_000,
    )  # fmt: skip
    await apply(
        conn,
        SKUS,
        created,
        event("sku.price_changed", sku, 2, price_per_gpu_hour=5_000_000),
        event("sku.price_changed", sku, 3, price_per_gpu_hour=7_000_000),
        event("sku.deactivated", sku, 4),
        event("sku.activated", sku, 5),
        event("sku.deactivated", sku, 6),
    )

    row = await get_sku(conn, sku)
    assert row is not None
    assert (row["price_per_gpu_hour"], row["active"], row["version"]) == (7_000_000, False, 6)
    assert row["availability"] == [{"region": "eu-west-1", "units": 0}]
    assert row["provision_deadline_seconds"] == 600  # an event from before SKUs carried one
