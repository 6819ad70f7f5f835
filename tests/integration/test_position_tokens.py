"""Every read route honours ``X-Position-Token`` the same way, over a real socket: a garbage
token is a 400 problem, a token sealed by this server for a write the read models never reach
is a 503 ``projection-behind`` with ``Retry-After``. The routes are walked from the contract,
so a new read route that forgets the token fails here."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateways.http.consistency import HEADER, make_token
from infra.db import signing_key
from infra.settings import Settings
from tests.support import api_server

pytestmark = pytest.mark.integration
CONTRACT = Path(__file__).parents[2] / "openapi" / "openapi.yaml"
NOT_READS = {"healthz", "readyz"}  # probes: no state of any tenant behind them
OPS_READS = {"listNodes", "getNode", "listPlatformAccounts"}


def read_routes() -> list[tuple[str, str, list[dict[str, Any]]]]:
    paths = yaml.safe_load(CONTRACT.read_text())["paths"]
    return [
        (path, op["operationId"], op.get("parameters", []))
        for path, ops in paths.items()
        for method, op in ops.items()
        if method == "get" and op["operationId"] not in NOT_READS
    ]


def test_every_read_route_of_the_contract_declares_the_token() -> None:
    routes = read_routes()
    assert len(routes) >= 18
    lacking = [op for _, op, params in routes if HEADER not in {p["name"] for p in params}]
    assert lacking == []


async def test_every_read_route_refuses_garbage_and_waits_for_an_unreached_write(
    settings: Settings, ops_key: str
) -> None:
    quick = settings.model_copy(update={"read_wait_seconds": 0.3})
    async with api_server(quick) as url, httpx.AsyncClient(base_url=url) as http:
        key = signing_key(settings.database_url or "", settings.db_schema)  # migrated by now
        ops = {"Authorization": f"Bearer {ops_key}"}
        tenant = (await http.post("/v1/tenants", json={"name": "Tokens"}, headers=ops)).json()
        owner = {"Authorization": f"Bearer {tenant['owner_api_key']}"}
        answers: dict[str, tuple[int, int, str, str | None]] = {}
        for path, op, _ in read_routes():
            ops_read = op in OPS_READS
            bound_to = "-" if ops_read else tenant["id"]
            target = path.replace("{tenant_id}", tenant["id"])
            target = re.sub(r"{\w+}", lambda _: str(uuid.uuid4()), target)  # any other id
            unreached = make_token(key, bound_to, "allocations", str(uuid.uuid4()), 10**9)
            headers = ops if ops_read else owner
            garbage = await http.get(target, headers={**headers, HEADER: "bm90LWEtdG9rZW4"})
            behind = await http.get(target, headers={**headers, HEADER: unreached})
            answers[op] = (
                garbage.status_code,
                behind.status_code,
                behind.json().get("type", "").rsplit("/", 1)[-1],
                behind.headers.get("Retry-After"),
            )
    wrong = {
        op: seen for op, seen in answers.items() if seen != (400, 503, "projection-behind", "1")
    }
    assert wrong == {}
    assert len(answers) == len(read_routes())
