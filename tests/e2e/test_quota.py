"""GPU quotas per tenant over HTTP and the CLI: ops set a limit, admission holds to it."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from infra.settings import Settings
from tests.e2e.identity_world import bearer, grant_credit, open_tenant
from tests.support import api_server, gpucloud

pytestmark = pytest.mark.e2e
SKU = {
    "name": "2x L4", "gpu_model": "L4", "gpus": 2, "vcpus": 16, "ram_gib": 128,
    "disk_gib": 200, "regions": ["eu-west-1"], "price_per_gpu_hour": 1_000_000,
}  # fmt: skip


async def test_ops_set_a_tenants_limit_and_admission_holds_to_it(
    settings: Settings, ops_key: str
) -> None:
    ops = bearer(ops_key)
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        acme = await open_tenant(http, ops_key, "Acme")
        owner = bearer(acme.keys["owner"])
        sku = (await http.post("/v1/skus", json=SKU, headers=ops)).json()["id"]
        await grant_credit(http, ops_key, acme.id, 100_000_000)
        quota = f"/v1/admin/tenants/{acme.id}/quota"

        async def ask(key: str) -> httpx.Response:
            body = {"sku_id": sku, "region": "eu-west-1"}
            return await http.post(
                "/v1/allocations", json=body, headers={**owner, "Idempotency-Key": key}
            )

        before = (await http.get(f"/v1/quota?tenant_id={acme.id}", headers=ops)).json()
        lowered = await http.put(quota, json={"gpus": 2}, headers=ops)
        first, refused = await ask("a-1"), await ask("a-2")
        seen_by_owner = (await http.get("/v1/quota", headers=owner)).json()
        raised = await http.put(quota, json={"gpus": 4}, headers=ops)
        again = await http.put(quota, json={"gpus": 4}, headers=ops)
        second = await ask("a-2")
        reset = await http.put(quota, json={"gpus": None}, headers=ops)

    assert before == {"tenant_id": acme.id, "gpus_limit": settings.tenant_gpu_quota,
                      "gpus_in_use": 0, "default": True}  # fmt: skip
    assert lowered.status_code == 200 and lowered.json()["gpus_limit"] == 2
    assert first.status_code == 202, first.text
    assert refused.status_code == 409 and refused.json()["type"].endswith("quota-exceeded")
    assert (seen_by_owner["gpus_limit"], seen_by_owner["gpus_in_use"]) == (2, 2)
    assert raised.json() == again.json() == {
        "tenant_id": acme.id, "gpus_limit": 4, "gpus_in_use": 2, "default": False
    }  # fmt: skip
    assert second.status_code == 202, second.text
    assert reset.json()["default"] is True and reset.json()["gpus_in_use"] == 4


async def test_bad_quota_requests_are_clear_problems_and_change_nothing(
    settings: Settings, ops_key: str
) -> None:
    ops = bearer(ops_key)
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        acme = await open_tenant(http, ops_key, "Acme")
        quota = f"/v1/admin/tenants/{acme.id}/quota"
        answers = {
            "negative": await http.put(quota, json={"gpus": -1}, headers=ops),
            "fraction": await http.put(quota, json={"gpus": 1.5}, headers=ops),
            "text": await http.put(quota, json={"gpus": "4"}, headers=ops),
            "missing": await http.put(quota, json={}, headers=ops),
            "extra": await http.put(quota, json={"gpus": 4, "x": 1}, headers=ops),
            "owner": await http.put(
                quota, json={"gpus": 64}, headers=bearer(acme.keys["owner"])
            ),
            "nobody": await http.put(
                "/v1/admin/tenants/00000000-0000-4000-8000-000000000000/quota",
                json={"gpus": 4}, headers=ops,
            ),
            "unnamed": await http.get("/v1/quota", headers=ops),
            "member": await http.get("/v1/quota", headers=bearer(acme.keys["member"])),
        }  # fmt: skip
        after = (await http.get(f"/v1/quota?tenant_id={acme.id}", headers=ops)).json()

    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses == {
        "negative": 422, "fraction": 422, "text": 422, "missing": 422, "extra": 422,
        "owner": 403, "nobody": 404, "unnamed": 422, "member": 403,
    }  # fmt: skip
    for answer in answers.values():
        assert answer.headers["content-type"].startswith("application/problem+json")
    assert after["default"] is True


async def test_the_cli_sets_and_shows_a_quota(settings: Settings, ops_key: str) -> None:
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        acme = await open_tenant(http, ops_key, "Acme")

    def run(*args: str) -> dict[str, object]:
        done = gpucloud(settings, "quota", *args, "--tenant", acme.id, "--json")
        assert done.returncode == 0, done.stderr
        shown: dict[str, object] = json.loads(done.stdout)
        return shown

    set_ = await asyncio.to_thread(run, "set", "--gpus", "3")
    shown = await asyncio.to_thread(run, "show")
    both = await asyncio.to_thread(
        gpucloud, settings, "quota", "set", "--tenant", acme.id, "--gpus", "3", "--default"
    )
    unknown = await asyncio.to_thread(
        gpucloud, settings, "quota", "show", "--tenant", "00000000-0000-4000-8000-000000000000"
    )
    assert set_ == shown == {"tenant_id": acme.id, "gpus_limit": 3, "gpus_in_use": 0,
                             "default": False}  # fmt: skip
    assert both.returncode == 2 and "--gpus N or --default" in both.stderr
    assert unknown.returncode == 2 and unknown.stderr.startswith("error:")
