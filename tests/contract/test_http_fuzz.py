"""Schemathesis over the committed openapi/openapi.yaml, against the real API on a socket.

Every answer of every operation must be one the contract documents: its status, content type,
body schema and headers, and never a server error. It runs twice, with a tenant owner's key and
with an ops key, each the schemathesis CLI in a child process (the API keeps serving on this
test's event loop meanwhile). A fixed seed and a bound on examples per operation make it the
same run every time, and keep it to seconds. Its negative phase sends what the schemas refuse
(control characters and NUL in every text field, over-long strings, wrong types) to every
write route; afterwards no event may sit in quarantine and a fresh write of every context must
reach its read model: nothing the fuzzer sent may have stopped a projection.
"""

from __future__ import annotations

import asyncio
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from infra.db import conninfo
from infra.settings import Settings
from infra.stripe_standin import StripeStandIn
from tests.contract.rules import ROOT, load
from tests.e2e.identity_world import bearer, grant_credit, open_tenant
from tests.support import api_server, eventually, roles

pytestmark = pytest.mark.integration
CONTRACT = ROOT / "openapi" / "openapi.yaml"
OPERATIONS = sum(len(item) for item in load("openapi/openapi.yaml")["paths"].values())
SEED = 20261203
EXAMPLES = 10  # per operation and phase; the coverage phase adds its boundary cases
SKU = {
    "name": "1x L4", "gpu_model": "L4", "gpus": 1, "vcpus": 8, "ram_gib": 64,
    "disk_gib": 100, "regions": ["eu-west-1"], "price_per_gpu_hour": 1_000_000,
}  # fmt: skip
# A schema cannot say which cursors, position tokens, emails or SKU ids the API issued or
# knows, so a request valid by the schema may still get those semantic 400s and 422s. Known
# ids (a tenant, a SKU) go into most cases, so that more of them get past the lookups.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]

[dictionaries]
tenants = {{ values = ["{tenant}"] }}
skus = {{ values = ["{sku}"] }}
regions = {{ values = ["eu-west-1"] }}

[parameters]
tenant_id = {{ dictionary = "tenants", probability = 0.7 }}
sku_id = {{ dictionary = "skus", probability = 0.7 }}
"body.sku_id" = {{ dictionary = "skus", probability = 0.7 }}
"body.region" = {{ dictionary = "regions", probability = 0.7 }}
"""


@dataclass(frozen=True)
class Run:
    who: str
    exit_code: int
    output: str

    def count(self, pattern: str) -> int:
        found = re.search(pattern, self.output)
        return int(found.group(1)) if found else 0

    def summary(self) -> str:
        operations, cases = self.count(r"Tested: (\d+)"), self.count(r"(\d+) generated")
        return f"as {self.who}: {operations} operations, {cases} cases, exit {self.exit_code}"


async def fuzz(url: str, who: str, key: str, folder: Path, known: dict[str, str]) -> Run:
    """One schemathesis run over the whole contract, with every check, as ``key``."""
    folder.mkdir()
    config = folder / "schemathesis.toml"
    config.write_text(CONFIG.format(**known))
    args = ["--config-file", str(config), "run", str(CONTRACT), "--url", url]
    args += ["--checks", "all", "--mode", "all", "--seed", str(SEED), "-n", str(EXAMPLES)]
    args += ["--generation-database", "none", "--request-timeout", "10", "--no-color"]
    args += ["--header", f"Authorization: {bearer(key)['Authorization']}"]
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "schemathesis.cli", *args,
        cwd=folder, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(child.communicate(), 120)
    finally:
        if child.returncode is None:
            child.kill()
    return Run(who, child.returncode or 0, output.decode(errors="replace"))


async def known_ids(http: httpx.AsyncClient, ops_key: str) -> tuple[str, dict[str, str]]:
    """A tenant with credit and a SKU, both in the read models: the owner's key and their ids."""
    tenant = await open_tenant(http, ops_key, "Fuzzed")
    await grant_credit(http, ops_key, tenant.id, 100_000_000)
    sku = await http.post("/v1/skus", json=SKU, headers=bearer(ops_key))

    async def projected() -> bool:
        read = await http.get(sku.headers["Location"], headers=bearer(ops_key))
        return read.status_code == 200

    await eventually(projected)
    return tenant.keys["owner"], {"tenant": tenant.id, "sku": sku.json()["id"]}


async def every_read_model_follows(http: httpx.AsyncClient, ops_key: str) -> None:
    """One write per context after the fuzzing; each is read back with its position token
    (a read that waits for its read model), so a stopped projection would fail here."""
    ops = bearer(ops_key)  # a new tenant and SKU: the fuzzer may have retired or capped the old
    tenant = await written_and_read(http, "/v1/tenants", {"name": "After"}, ops)
    await grant_credit(http, ops_key, str(tenant["id"]), 10_000_000)
    sku = await written_and_read(http, "/v1/skus", SKU, ops)
    owner = bearer(str(tenant["owner_api_key"]))
    await written_and_read(http, "/v1/api-keys", {"name": "after"}, owner, "/v1/api-keys")
    body = {"sku_id": sku["id"], "region": "eu-west-1"}
    await written_and_read(http, "/v1/allocations", body, owner)


async def written_and_read(
    http: httpx.AsyncClient, path: str, body: dict[str, object], who: dict[str, str],
    reader: str | None = None,
) -> dict[str, object]:  # fmt: skip
    """A write, then a read that waits for the write's read model (its position token)."""
    written = await http.post(path, json=body, headers={**who, "Idempotency-Key": f"after-{path}"})
    assert written.status_code in (201, 202), written.text
    token = {"X-Position-Token": written.headers["X-Position-Token"]}
    read = await http.get(reader or written.headers["Location"], headers={**who, **token})
    assert read.status_code == 200, (path, read.text)
    answer: dict[str, object] = written.json()
    return answer


async def quarantined(settings: Settings) -> list[tuple[str, str]]:
    info = conninfo(settings.database_url or "", settings.db_schema)
    async with await psycopg.AsyncConnection.connect(info) as conn:
        cur = await conn.execute("SELECT projection, error FROM projection_quarantine")
        return [(row[0], row[1]) for row in await cur.fetchall()]


async def test_every_answer_of_every_operation_is_in_the_contract(
    settings: Settings, ops_key: str, tmp_path: Path
) -> None:
    stand_in = StripeStandIn()  # checkouts reach a Stripe API on loopback
    async with stand_in:
        await _fuzz_everything(settings, ops_key, tmp_path, stand_in)


async def _fuzz_everything(
    settings: Settings, ops_key: str, tmp_path: Path, stand_in: StripeStandIn
) -> None:
    unlimited = settings.with_(
        rate_limit_per_second=0, stripe_secret_key="sk_test_standin", stripe_api_base=stand_in.url
    )
    async with (
        api_server(unlimited) as url,
        roles(unlimited, "relay", "projector"),
        httpx.AsyncClient(base_url=url) as http,
    ):
        owner_key, known = await known_ids(http, ops_key)
        keys = {"owner": owner_key, "ops": ops_key}
        runs = [await fuzz(url, who, key, tmp_path / who, known) for who, key in keys.items()]
        await every_read_model_follows(http, ops_key)
        assert await quarantined(unlimited) == [], (
            "a fuzzed write made an event no read model keeps"
        )
    print(*(f"schemathesis {run.summary()}" for run in runs), sep="\n")
    failed = [f"{run.summary()}\n{run.output}" for run in runs if run.exit_code != 0]
    assert not failed, "answers the contract does not document:\n" + "\n".join(failed)
    assert all(run.count(r"Tested: (\d+)") == OPERATIONS for run in runs), [r.output for r in runs]
