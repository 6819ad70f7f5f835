"""The catalog over HTTP and the CLI, against PostgreSQL, Tansu, the relay and the projector:
SKUs with live availability, nodes and their claims, allocations scoped by tenant."""

from __future__ import annotations

import asyncio
import json
import shlex
from typing import Any
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest

from gateways.cli import ops as opstools
from infra.bootstrap import build_system
from infra.gpus import discover
from infra.settings import Settings
from tests.support import api_server, eventually, gpucloud, roles

pytestmark = pytest.mark.integration
TOKEN = "X-Position-Token"
H100 = "NVIDIA H100"
SKU = {
    "name": "2x H100",
    "gpu_model": H100,
    "gpus": 2,
    "vcpus": 16,
    "ram_gib": 128,
    "disk_gib": 400,
    "regions": ["us-east-1", "eu-west-1"],
    "price_per_gpu_hour": 2_500_000,
}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def created(http: httpx.AsyncClient, path: str, key: str, body: dict[str, Any]) -> str:
    answer = await http.post(path, json=body, headers=auth(key))
    assert answer.status_code == 201, answer.text
    assert answer.headers["Location"] == f"{path}/{answer.json()['id']}"
    return str(answer.json()["id"])


async def node(http: httpx.AsyncClient, key: str, region: str, gpus: int, model: str = H100) -> str:
    body = {"driver": "local", "region": region, "gpu_model": model, "gpu_count": gpus}
    return await created(http, "/v1/nodes", key, body)


async def units(http: httpx.AsyncClient, key: str, sku_id: str) -> dict[str, int]:
    answer = await http.get(f"/v1/skus/{sku_id}", headers=auth(key))
    if answer.status_code != 200:
        return {}
    return {a["region"]: a["units"] for a in answer.json()["availability"]}


async def until_units(
    http: httpx.AsyncClient, key: str, expected: dict[str, dict[str, int]]
) -> None:
    async def check() -> dict[str, dict[str, int]] | None:
        seen = {sku: await units(http, key, sku) for sku in expected}
        return seen if seen == expected else None

    await eventually(check, timeout=10, every=0.1)


async def test_availability_follows_nodes_claims_drains_and_releases(
    settings: Settings, ops_key: str
) -> None:
    async with (
        api_server(settings) as url,
        roles(settings, "relay", "projector"),
        httpx.AsyncClient(base_url=url) as http,
    ):
        two = await http.post("/v1/skus", json=SKU, headers=auth(ops_key))
        eight = await created(
            http, "/v1/skus", ops_key, {**SKU, "name": "8x", "gpus": 8, "regions": ["eu-west-1"]}
        )
        two_id = two.json()["id"]
        first = await http.get(
            f"/v1/skus/{two_id}", headers={**auth(ops_key), TOKEN: two.headers[TOKEN]}
        )
        assert first.status_code == 200, first.text
        assert first.json()["availability"] == [
            {"region": "eu-west-1", "units": 0},
            {"region": "us-east-1", "units": 0},
        ]
        assert (first.json()["price_per_gpu_hour"], first.json()["active"]) == (2_500_000, True)

        eu = await node(http, ops_key, "eu-west-1", 8)
        us = await node(http, ops_key, "us-east-1", 4)
        await node(http, ops_key, "eu-west-1", 8, model="NVIDIA A100")  # another model
        await until_units(
            http, ops_key, {two_id: {"eu-west-1": 4, "us-east-1": 2}, eight: {"eu-west-1": 1}}
        )

        system = build_system(settings)
        try:
            allocation = uuid4()
            claim = system.inventory.claim
            assert await asyncio.to_thread(claim, UUID(eu), "c-1", allocation, 3) == (0, 1, 2)
            await until_units(
                http, ops_key, {two_id: {"eu-west-1": 2, "us-east-1": 2}, eight: {"eu-west-1": 0}}
            )
            claimed = (await http.get(f"/v1/nodes/{eu}", headers=auth(ops_key))).json()
            drained = await http.post(
                f"/v1/nodes/{us}/state", json={"state": "draining"}, headers=auth(ops_key)
            )
            await until_units(
                http, ops_key, {two_id: {"eu-west-1": 2, "us-east-1": 0}, eight: {"eu-west-1": 0}}
            )
            for _ in range(2):  # the second release gives nothing back
                await asyncio.to_thread(system.inventory.release, UUID(eu), "c-1")
        finally:
            system.close_write_side()
        await until_units(
            http, ops_key, {two_id: {"eu-west-1": 4, "us-east-1": 0}, eight: {"eu-west-1": 1}}
        )
        released = await http.get(f"/v1/nodes/{eu}", headers=auth(ops_key))

        priced = await http.post(
            f"/v1/skus/{eight}/price", json={"price_per_gpu_hour": "3000000"}, headers=auth(ops_key)
        )
        off = await http.post(f"/v1/skus/{eight}/deactivate", headers=auth(ops_key))
        after = await http.get(
            f"/v1/skus/{eight}", headers={**auth(ops_key), TOKEN: off.headers[TOKEN]}
        )
        lists = {
            query: await http.get(f"/v1/nodes?{query}", headers=auth(ops_key))
            for query in ("region=eu-west-1", "state=draining", "gpu_model=NVIDIA A100", "")
        }

    assert (claimed["free_gpus"], claimed["version"]) == (5, 2)
    assert [(c["claim_id"], c["allocation_id"], c["gpu_indices"]) for c in claimed["claims"]] == [
        ("c-1", str(allocation), [0, 1, 2])
    ]
    assert (drained.status_code, drained.json()["state"]) == (200, "draining")
    assert drained.headers["Location"] == f"/v1/nodes/{us}"
    assert (released.json()["free_gpus"], released.json()["claims"]) == (8, [])
    assert (priced.status_code, priced.json()["price_per_gpu_hour"]) == (200, 3_000_000)
    assert (off.status_code, off.json()["active"]) == (200, False)
    assert after.json()["availability"] == [{"region": "eu-west-1", "units": 0}]
    assert (after.json()["price_per_gpu_hour"], after.json()["active"]) == (3_000_000, False)
    counts = {query: len(answer.json()["items"]) for query, answer in lists.items()}
    assert counts == {"region=eu-west-1": 2, "state=draining": 1, "gpu_model=NVIDIA A100": 1, "": 3}
    assert lists["state=draining"].json()["items"][0]["id"] == us
    projected = read_models(settings)
    for name in ("nodes", "skus"):
        await opstools.rebuild(settings, name, json_out=True)
    assert read_models(settings) == projected


def read_models(settings: Settings) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.database_url or "") as conn:
        conn.execute(f"SET search_path TO {settings.db_schema}")
        nodes = conn.execute("SELECT id, free_gpus, state, version FROM nodes ORDER BY id")
        skus = conn.execute("SELECT id, price_per_gpu_hour, active, version FROM skus ORDER BY id")
        return [*nodes.fetchall(), *skus.fetchall()]


def inventory_events(settings: Settings) -> int:
    with psycopg.connect(settings.database_url or "") as conn:
        query = f"SELECT count(*) FROM {settings.db_schema}.inventory_events"
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


BAD_BODIES = [
    ("/v1/skus", {**SKU, "price_per_gpu_hour": 2.5}),
    ("/v1/skus", {**SKU, "price_per_gpu_hour": "2.5"}),
    ("/v1/skus", {**SKU, "price_per_gpu_hour": 2.0}),
    ("/v1/skus", {**SKU, "gpus": True}),
    ("/v1/skus", {**SKU, "discount": 1}),
    ("/v1/skus", {**SKU, "regions": ["Europe"]}),
    ("/v1/skus", {**SKU, "regions": ["eu-west-1", "eu-west-1"]}),
    ("/v1/nodes", {"driver": "ssh", "region": "eu-west-1", "gpu_model": H100, "gpu_count": 2}),
    ("/v1/nodes", {"driver": "local", "region": "eu-west-1", "gpu_model": H100, "gpu_count": 0}),
]


async def pages(http: httpx.AsyncClient, key: str, query: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        suffix = f"&cursor={cursor}" if cursor else ""
        answer = await http.get(f"/v1/skus?{query}{suffix}", headers=auth(key))
        assert answer.status_code == 200, answer.text
        items += answer.json()["items"]
        if (cursor := answer.json()["next_cursor"]) is None:
            return items


async def test_skus_page_and_filter_for_tenants_who_cannot_write_them(
    settings: Settings, ops_key: str
) -> None:
    shapes = [
        (1, ["eu-west-1"], H100),
        (4, ["eu-west-1", "us-east-1"], H100),
        (2, ["us-east-1"], "NVIDIA L4"),
        (3, ["us-east-1", "ap-south-1"], H100),
        (5, ["eu-west-1"], "NVIDIA L4"),
    ]
    async with (
        api_server(settings) as url,
        roles(settings, "relay", "projector"),
        httpx.AsyncClient(base_url=url) as http,
    ):
        ids = {}
        for dollars, regions, model in shapes:
            body = {**SKU, "name": f"{dollars} dollar", "regions": regions, "gpu_model": model}
            body["price_per_gpu_hour"] = dollars * 1_000_000
            ids[dollars] = await created(http, "/v1/skus", ops_key, body)
        off = await http.post(f"/v1/skus/{ids[5]}/deactivate", headers=auth(ops_key))
        tenant = await http.post("/v1/tenants", json={"name": "Acme"}, headers=auth(ops_key))
        key = tenant.json()["owner_api_key"]
        await eventually(lambda: _all_listed(http, key, len(shapes)), timeout=10, every=0.1)
        await http.get(f"/v1/skus/{ids[5]}", headers={**auth(key), TOKEN: off.headers[TOKEN]})

        by_price = await pages(http, key, "limit=2&sort=price_per_gpu_hour&direction=desc")
        us_east = await pages(http, key, "limit=1&region=us-east-1&sort=name")
        l4 = await pages(http, key, "gpu_model=NVIDIA L4")
        inactive = await pages(http, key, "active=false")
        first = await http.get("/v1/skus?limit=1", headers=auth(key))
        mixed = await http.get(
            f"/v1/skus?limit=1&region=eu-west-1&cursor={first.json()['next_cursor']}",
            headers=auth(key),
        )
        bogus = await http.get("/v1/skus?sort=vcpus", headers=auth(key))
        unknown = await http.get("/v1/skus?colour=red", headers=auth(key))

    price = [item["price_per_gpu_hour"] // 1_000_000 for item in by_price]
    assert price == [5, 4, 3, 2, 1]
    assert [item["name"] for item in us_east] == ["2 dollar", "3 dollar", "4 dollar"]
    assert {item["id"] for item in l4} == {ids[2], ids[5]}
    assert [item["id"] for item in inactive] == [ids[5]]
    assert {a["region"] for a in us_east[1]["availability"]} == {"ap-south-1", "us-east-1"}
    assert (mixed.status_code, mixed.json()["type"].rsplit("/", 1)[1]) == (
        400,
        "invalid-page-request",
    )
    assert (bogus.status_code, unknown.status_code) == (422, 422)


async def _all_listed(http: httpx.AsyncClient, key: str, count: int) -> bool:
    answer = await http.get("/v1/skus?limit=200", headers=auth(key))
    return answer.status_code == 200 and len(answer.json()["items"]) == count


async def test_guards_bad_input_and_allocations_scoped_by_tenant(
    settings: Settings, ops_key: str
) -> None:
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        mine = (await http.post("/v1/tenants", json={"name": "Mine"}, headers=auth(ops_key))).json()
        theirs = (
            await http.post("/v1/tenants", json={"name": "Theirs"}, headers=auth(ops_key))
        ).json()
        key = mine["owner_api_key"]
        before = inventory_events(settings)
        bad = [await http.post(path, json=body, headers=auth(ops_key)) for path, body in BAD_BODIES]
        after = inventory_events(settings)
        tenant_writes = await http.post("/v1/skus", json=SKU, headers=auth(key))
        tenant_nodes = await http.get("/v1/nodes", headers=auth(key))
        anonymous = await http.get("/v1/skus")
        empty = await http.get("/v1/allocations", headers=auth(key))
        allocation = _allocation_of(settings, UUID(theirs["id"]))
        read = {
            who: await http.get(f"/v1/allocations/{allocation}", headers=auth(k))
            for who, k in (("mine", key), ("theirs", theirs["owner_api_key"]), ("ops", ops_key))
        }
        ops_list = await http.get(
            f"/v1/allocations?tenant_id={theirs['id']}", headers=auth(ops_key)
        )
        peeking = await http.get(f"/v1/allocations?tenant_id={theirs['id']}", headers=auth(key))

    statuses = [
        (path, answer.status_code) for (path, _), answer in zip(BAD_BODIES, bad, strict=True)
    ]
    assert all(status == 422 for _, status in statuses), statuses
    assert all(a.headers["content-type"] == "application/problem+json" for a in bad)
    assert after == before
    assert (tenant_writes.status_code, tenant_nodes.status_code, anonymous.status_code) == (
        403,
        403,
        401,
    )
    assert empty.json() == {"items": [], "next_cursor": None}
    assert {who: answer.status_code for who, answer in read.items()} == {
        "mine": 404,
        "theirs": 200,
        "ops": 200,
    }
    assert read["theirs"].json()["cost_micro"] == 0
    assert [item["id"] for item in ops_list.json()["items"]] == [str(allocation)]
    assert peeking.status_code == 404


def _allocation_of(settings: Settings, tenant_id: UUID) -> UUID:
    """The allocation issue fills this table; until then the test writes a row itself."""
    allocation = uuid4()
    with psycopg.connect(settings.database_url or "") as conn:
        conn.execute(
            f"INSERT INTO {settings.db_schema}.allocations (id, tenant_id, sku_id, region, "
            "state, gpu_count, created_at, updated_at) "
            "VALUES (%s, %s, %s, 'eu-west-1', 'running', 2, now(), now())",
            (allocation, tenant_id, uuid4()),
        )
    return allocation


CLI_SKU = shlex.split(
    "sku create --name 'CLI 1x L4' --gpu-model L4 --gpus 1 --region eu-west-1 "
    "--region us-east-1 --price-per-gpu-hour 800000 --provision-deadline 900 --json"
)
CLI_NODE = shlex.split("node register --driver ssh --region eu-west-1 --gpu-model L4 --gpu-count 2")
CLI_DISCOVER = shlex.split("node register --driver local --region eu-west-1 --discover")


async def test_the_cli_creates_skus_and_nodes_the_api_then_lists(
    settings: Settings, ops_key: str
) -> None:
    commands = [
        CLI_SKU,
        [*CLI_NODE, "--address", "10.0.0.7:22", "--json"],
        CLI_NODE,  # ssh without an address
    ]
    # One at a time: each start of the store runs CREATE OR REPLACE FUNCTION, and PostgreSQL
    # fails concurrent ones ("tuple concurrently updated"). Discovery touches no database.
    written, discovered = await asyncio.gather(
        asyncio.to_thread(lambda: [gpucloud(settings, *command) for command in commands]),
        asyncio.to_thread(gpucloud, settings, *CLI_DISCOVER),
    )
    sku_run, node_run, refused = written
    assert sku_run.returncode == node_run.returncode == 0, sku_run.stderr + node_run.stderr
    sku_id, node_id = json.loads(sku_run.stdout)["id"], json.loads(node_run.stdout)["id"]
    assert refused.returncode == 2
    assert refused.stderr.startswith("error:") and refused.stderr.count("\n") == 1
    if discover() is None:  # this machine has no NVIDIA driver: a clear error, exit 2
        assert discovered.returncode == 2, discovered.stderr
        assert discovered.stderr.startswith("error:") and "--gpu-model" in discovered.stderr
    else:
        assert discovered.returncode == 0, discovered.stderr
    async with (
        api_server(settings) as url,
        roles(settings, "relay", "projector"),
        httpx.AsyncClient(base_url=url) as http,
    ):
        sku = await eventually(lambda: _ok(http.get(f"/v1/skus/{sku_id}", headers=auth(ops_key))))
        listed = await http.get("/v1/skus?gpu_model=L4", headers=auth(ops_key))
        ssh = await eventually(lambda: _ok(http.get(f"/v1/nodes/{node_id}", headers=auth(ops_key))))
    assert (sku["price_per_gpu_hour"], sku["vcpus"], sku["ram_gib"]) == (800_000, 8, 64)
    assert sku["provision_deadline_seconds"] == 900
    assert listed.json()["items"][0]["provision_deadline_seconds"] == 900
    assert [item["id"] for item in listed.json()["items"]] == [sku_id]
    assert (ssh["driver"], ssh["address"], ssh["gpu_count"]) == ("ssh", "10.0.0.7:22", 2)


async def _ok(request: Any) -> dict[str, Any] | None:
    answer = await request
    return answer.json() if answer.status_code == 200 else None
