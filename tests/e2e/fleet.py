"""A tenant with credit, a one-GPU SKU and a four-GPU local node the catalog's read model
shows: what the e2e tests that drive the worker's passes stage (the projector must run)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from infra.bootstrap import System
from projections import catalog
from tests.support import eventually

PRICE = 3_600_000  # 1,000 micro-dollars per GPU-second


async def one_node_fleet(system: System, credit: int) -> tuple[UUID, UUID]:
    """(tenant, sku), once the node is a placement candidate."""
    now = datetime.now(UTC)
    tenant = system.identity.create_tenant("Acme", None, now).tenant.id
    system.ledgers.credit(tenant, "topup-1", credit, now)
    sku = system.inventory.create_sku(
        name="1x H100", gpu_model="H100", gpus=1, vcpus=8, ram_gib=64, disk_gib=100,
        regions=["eu-west-1"], price_per_gpu_hour=PRICE,
    ).id  # fmt: skip
    system.inventory.register_node(region="eu-west-1", gpu_model="H100", gpu_count=4)

    async def node_visible() -> list[UUID]:
        async with system.pool.connection() as conn:
            return await catalog.placement_candidates(conn, "eu-west-1", "H100", 1)

    await eventually(node_visible)
    return tenant, sku
