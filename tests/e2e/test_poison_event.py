"""A poison event through the whole stack: an event no read model can keep, written straight
into the store, is quarantined (table, dead-letter topic, metric), the next tenant's allocation
is projected at once, and ops see it and replay it with the CLI."""

from __future__ import annotations

import asyncio
import json
from uuid import UUID

import pytest

from infra import metrics
from infra.bootstrap import System
from infra.messages.names import ALLOCATION_TOPIC
from infra.settings import Settings
from tests.e2e.identity_world import bearer, grant_credit, open_tenant
from tests.e2e.test_allocation_lifecycle import SKU
from tests.support import Stack, eventually, gpucloud, read_topic

pytestmark = pytest.mark.e2e


def poison(system: System, tenant: str, sku: str) -> UUID:
    """What the edges refuse, written below them: a name PostgreSQL text cannot hold."""
    return system.compute.request(
        tenant_id=UUID(tenant), sku_id=UUID(sku), region="eu-west-1", count=1,
        name="n\x00", key="poison-1", now=system.clock(), quota_gpus=8, runway_minutes=1,
    ).id  # fmt: skip


def quarantined(settings: Settings) -> list[dict[str, object]]:
    listed = gpucloud(settings, "projections", "quarantine", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows: list[dict[str, object]] = json.loads(listed.stdout)["quarantined"]
    return rows


async def test_a_poison_event_is_quarantined_and_the_next_tenant_is_projected(
    settings: Settings, ops_key: str, direct_system: System, stack: Stack
) -> None:
    before = metrics.PROJECTION_QUARANTINED.labels("allocations")._value.get()
    http = stack.http
    acme, other = (
        await open_tenant(http, ops_key, "Acme"),
        await open_tenant(http, ops_key, "B"),
    )
    sku = (await http.post("/v1/skus", json=SKU, headers=bearer(ops_key))).json()["id"]
    for tenant in (acme, other):
        await grant_credit(http, ops_key, tenant.id, 10_000_000)
    bad = poison(direct_system, acme.id, sku)

    body = {"sku_id": sku, "region": "eu-west-1", "count": 1, "name": "fine"}
    keyed = {**bearer(other.keys["owner"]), "Idempotency-Key": "next-1"}
    accepted = await http.post("/v1/allocations", json=body, headers=keyed)
    assert accepted.status_code == 202, accepted.text
    token = {"X-Position-Token": accepted.headers["X-Position-Token"], **keyed}
    read = await http.get(accepted.headers["Location"], headers=token)
    assert read.status_code == 200, read.text  # projected within the read's 2 s bound

    rows = await eventually(lambda: asyncio.to_thread(quarantined, settings), timeout=10)
    assert [(r["projection"], r["subject"], r["held"]) for r in rows] == [
        ("allocations", str(bad), False)
    ]
    assert "NUL" in str(rows[0]["error"])
    dead = await read_topic(settings.kafka_bootstrap_servers or "", f"{ALLOCATION_TOPIC}.dlq", 3, 1)
    assert [d.headers for d in dead] and dict(dead[0].headers)["ce_subject"] == str(bad).encode()
    assert metrics.PROJECTION_QUARANTINED.labels("allocations")._value.get() == before + 1
    own = await http.get(f"/v1/allocations/{bad}", headers=bearer(acme.keys["owner"]))
    assert own.status_code == 404  # the tenant's poisoned allocation is not in the read model

    replay = gpucloud(settings, "projections", "quarantine", "replay", "allocations", "--json")
    assert replay.returncode == 1  # nothing fixed it: still failing, and says so
    assert str(rows[0]["id"]) in json.loads(replay.stdout)["still_failing"]
