"""An allocation's whole life through HTTP, Kafka and the local node driver: admitted, placed,
provisioned as a real process group with its GPUs in CUDA_VISIBLE_DEVICES, billed, released,
its process gone and its usage readable."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.settings import Settings
from tests.e2e.identity_world import Tenant, bearer, grant_credit, open_tenant
from tests.support import api_server, eventually, roles

pytestmark = pytest.mark.e2e
PRICE = 3_600_000  # 1,000 micro-dollars per GPU-second
SKU = {
    "name": "2x H100", "gpu_model": "H100", "gpus": 2, "vcpus": 16, "ram_gib": 128,
    "disk_gib": 200, "regions": ["eu-west-1"], "price_per_gpu_hour": PRICE,
}  # fmt: skip


def fast(settings: Settings) -> Settings:
    return settings.with_(worker_interval_seconds=0.3, saga_poll_seconds=0.05)


async def stage(http: httpx.AsyncClient, ops_key: str) -> tuple[Tenant, str, str]:
    """A tenant with $10 of credit, a SKU, and a local node with 4 GPUs visible to placement."""
    ops = bearer(ops_key)
    acme = await open_tenant(http, ops_key, "Acme")
    sku = (await http.post("/v1/skus", json=SKU, headers=ops)).json()["id"]
    node = {"driver": "local", "region": "eu-west-1", "gpu_model": "H100", "gpu_count": 4}
    node_id = (await http.post("/v1/nodes", json=node, headers=ops)).json()["id"]
    await grant_credit(http, ops_key, acme.id, 10_000_000)

    async def placeable() -> bool:
        return (await http.get(f"/v1/nodes/{node_id}", headers=ops)).status_code == 200

    await eventually(placeable)
    return acme, sku, node_id


def environment_of(settings: Settings, allocation_id: str) -> dict[str, str]:
    record = json.loads(
        (settings.data_dir.resolve() / "instances" / allocation_id / "instance.json").read_text()
    )
    raw = Path(f"/proc/{record['pid']}/environ").read_bytes().split(b"\0")
    return dict(e.decode().split("=", 1) for e in raw if b"=" in e)


async def test_an_allocation_runs_on_the_local_node_is_billed_and_released(
    settings: Settings, ops_key: str
) -> None:
    s = fast(settings)
    async with (
        api_server(s) as url,
        roles(s, "relay", "projector", "worker"),
        httpx.AsyncClient(base_url=url) as http,
    ):
        acme, sku, node_id = await stage(http, ops_key)
        owner = bearer(acme.keys["owner"])
        body = {"sku_id": sku, "region": "eu-west-1", "count": 1, "name": "training"}
        keyed = {**owner, "Idempotency-Key": "train-1"}
        first = await http.post("/v1/allocations", json=body, headers=keyed)
        again = await http.post("/v1/allocations", json=body, headers=keyed)
        assert first.status_code == again.status_code == 202, first.text
        allocation = first.json()["id"]
        assert again.json()["id"] == allocation
        assert first.headers["location"] == f"/v1/allocations/{allocation}"
        path = f"/v1/allocations/{allocation}"

        running = await eventually(_waiter(http, path, owner, "running"))
        assert running["node_id"] == node_id and running["allowed_actions"] == ["release"]
        env = environment_of(s, allocation)
        assert env["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, running["gpu_indices"]))
        assert len(running["gpu_indices"]) == 2

        started = datetime.fromisoformat(running["started_at"])
        await eventually(partial(_past, started + timedelta(seconds=2)), every=0.2)
        released = await http.post(f"{path}/release", headers=owner)
        assert released.status_code == 202, released.text
        done = await eventually(_waiter(http, path, owner, "released"))
        assert done["allowed_actions"] == [] and done["released_at"] is not None
        with pytest.raises(FileNotFoundError):
            environment_of(s, allocation)  # the instance record is gone with the process

        async def billed() -> dict[str, Any] | None:
            got = (await http.get(path, headers=owner)).json()
            return got if got["cost_micro"] > 0 and got["billed_through"] else None

        final = await eventually(billed)
        usage = (await http.get(f"{path}/usage", headers=owner)).json()["items"]
        ledger = (await http.get("/v1/ledger", headers=bearer(acme.keys["billing"]))).json()
        twice = await http.post(f"{path}/release", headers=owner)
    assert sum(w["taken"] for w in usage) == final["cost_micro"]
    assert all(w["gpus"] == 2 and w["price_per_gpu_hour"] == PRICE for w in usage)
    assert ledger["held"] == 0  # the runway hold was voided when the allocation started
    assert twice.status_code == 409 and twice.json()["type"].endswith("invalid-transition")


async def test_bad_requests_are_clear_problems_and_create_nothing(
    settings: Settings, ops_key: str
) -> None:
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        acme, sku, _ = await _stage_without_projector(http, ops_key, settings)
        owner = bearer(acme.keys["owner"])
        good = {"sku_id": sku, "region": "eu-west-1", "count": 1}
        keyed = {**owner, "Idempotency-Key": "k-1"}
        unkeyed = await http.post("/v1/allocations", json=good, headers=owner)
        zero = await http.post("/v1/allocations", json={**good, "count": 0}, headers=keyed)
        floaty = await http.post("/v1/allocations", json={**good, "count": 1.0}, headers=keyed)
        elsewhere = await http.post(
            "/v1/allocations", json={**good, "region": "us-east-1"}, headers=keyed
        )
        broke = await http.post(
            "/v1/allocations", json=good, headers={**owner, "Idempotency-Key": "k-2"}
        )
        auditor = await http.post(
            "/v1/allocations",
            json=good,
            headers={**bearer(acme.keys["auditor"]), "Idempotency-Key": "k-3"},
        )
        missing = await http.post(f"/v1/allocations/{sku}/release", headers=owner)
    assert unkeyed.status_code == zero.status_code == floaty.status_code == 422
    assert elsewhere.status_code == 409 and elsewhere.json()["type"].endswith("sku-unavailable")
    assert broke.status_code == 422 and broke.json()["type"].endswith("insufficient-funds")
    assert auditor.status_code == 403
    assert missing.status_code == 404
    for problem in (unkeyed, zero, elsewhere, broke):
        assert problem.headers["content-type"].startswith("application/problem+json")


async def _stage_without_projector(
    http: httpx.AsyncClient, ops_key: str, settings: Settings
) -> tuple[Tenant, str, str]:
    ops = bearer(ops_key)
    acme = await open_tenant(http, ops_key, "Acme")
    sku = (await http.post("/v1/skus", json=SKU, headers=ops)).json()["id"]
    return acme, sku, ""


async def _past(moment: datetime) -> bool:
    """Billing counts whole seconds: the test lets some pass (the allocation is running)."""
    return datetime.now(UTC) >= moment


def _waiter(http: httpx.AsyncClient, path: str, key: dict[str, str], wanted: str) -> Any:
    async def check() -> dict[str, Any] | None:
        got: dict[str, Any] = (await http.get(path, headers=key)).json()
        return got if got.get("state") == wanted else None

    return check
