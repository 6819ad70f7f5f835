"""A write side with one tenant, credit, a SKU and nodes: the stage the allocation tests share."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from handlers.allocations import Allocations
from handlers.base import Written
from infra.bootstrap import System, build_system
from infra.memory import MemoryWriteSide
from infra.settings import Settings
from tests.clock import TestClock

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)  # where the world's clock starts
PRICE = 3_600_000  # $3.60 per GPU-hour: 1,000 micro-dollars per GPU-second
WriteSide = System | MemoryWriteSide  # the same applications, on PostgreSQL or in memory


@dataclass
class World:
    system: WriteSide
    tenant: UUID
    sku: UUID
    nodes: list[UUID]

    @property
    def compute(self) -> Allocations:
        return self.system.compute

    def clock(self) -> datetime:
        return self.system.clock()

    def request(
        self, key: str | None = None, count: int = 1, now: datetime | None = None
    ) -> Written:
        return self.compute.request(
            tenant_id=self.tenant, sku_id=self.sku, region="eu-west-1", count=count,
            name=None, key=key or secrets.token_hex(8), now=now or self.clock(),
            quota_gpus=64, runway_minutes=10, deadline_seconds=300,
        )  # fmt: skip


def write_side(database_url: str, schema: str) -> System:
    settings = Settings(DATABASE_URL=database_url, GPUCLOUD_DB_SCHEMA=schema)
    return build_system(settings, TestClock(NOW))


def stage(
    system: WriteSide, credit: int, node_gpus: tuple[int, ...] = (4,), sku_gpus: int = 1
) -> World:
    now = system.clock()
    tenant = system.identity.create_tenant("acme", None, now).tenant.id
    if credit:
        system.ledgers.credit(tenant, "topup-1", credit, now)
    sku = system.inventory.create_sku(
        name="h100", gpu_model="H100", gpus=sku_gpus, vcpus=8, ram_gib=64, disk_gib=100,
        regions=["eu-west-1"], price_per_gpu_hour=PRICE,
    ).id  # fmt: skip
    nodes = [
        system.inventory.register_node(region="eu-west-1", gpu_model="H100", gpu_count=n).id
        for n in node_gpus
    ]
    return World(system, tenant, sku, nodes)
