"""HTTP -> event store -> relay -> Kafka -> projector -> read model, over real sockets."""

from __future__ import annotations

import json

import httpx
import psycopg
import pytest

from infra.settings import Settings
from tests.conftest import issue_ops_key
from tests.support import Stack, api_server, eventually, read_topic, roles

pytestmark = pytest.mark.e2e
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


TENANT_EVENTS = (
    "SELECT count(*) FROM {}.identity_events WHERE topic LIKE 'gpucloud.identity.Tenant.%%'"
)


async def test_a_created_tenant_reaches_the_read_model_with_one_trace(
    settings: Settings, ops_key: str, stack: Stack
) -> None:
    http = stack.http
    created = await http.post(
        "/v1/tenants",
        json={"name": "Acme Research"},
        headers={**auth(ops_key), "X-Request-ID": "req-42", "traceparent": TRACEPARENT},
    )
    assert created.status_code == 201, created.text
    tenant_id = created.json()["id"]
    token = created.headers["X-Position-Token"]
    assert created.headers["Location"] == f"/v1/tenants/{tenant_id}"

    read = await http.get(
        f"/v1/tenants/{tenant_id}",
        headers={**auth(ops_key), "X-Position-Token": token},
    )

    assert read.status_code == 200, read.text
    assert read.json()["name"] == "Acme Research"
    with psycopg.connect(settings.database_url or "") as conn:
        row = conn.execute(
            f"SELECT trace_id FROM {settings.db_schema}.tenants WHERE id = %s", (tenant_id,)
        ).fetchone()
    assert row == (TRACE_ID,)
    [record] = await read_topic(settings.kafka_bootstrap_servers or "", "identity.tenant.v1", 3, 1)
    headers = dict(record.headers)
    assert headers["ce_correlationid"] == b"req-42"
    assert headers["traceparent"].split(b"-")[1] == TRACE_ID.encode()


async def test_a_read_that_waits_past_its_bound_answers_projection_behind(
    settings: Settings, ops_key: str
) -> None:
    lagging = settings.with_(read_wait_seconds=0.3)
    async with api_server(lagging) as url, httpx.AsyncClient(base_url=url) as http:
        created = await http.post("/v1/tenants", json={"name": "Acme"}, headers=auth(ops_key))
        read = await http.get(
            f"/v1/tenants/{created.json()['id']}",
            headers={**auth(ops_key), "X-Position-Token": created.headers["X-Position-Token"]},
        )
        plain = await http.get(f"/v1/tenants/{created.json()['id']}", headers=auth(ops_key))

    assert read.status_code == 503
    assert read.headers["Retry-After"] == "1"
    assert read.json()["type"].endswith("/projection-behind")
    assert plain.status_code == 404  # no token: eventually consistent, not there yet


async def test_the_same_idempotency_key_gives_one_tenant(settings: Settings, ops_key: str) -> None:
    headers = {**auth(ops_key), "Idempotency-Key": "create-acme-1"}
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        first = await http.post("/v1/tenants", json={"name": "Acme"}, headers=headers)
        again = await http.post("/v1/tenants", json={"name": "Acme"}, headers=headers)
        other = await http.post("/v1/tenants", json={"name": "Other"}, headers=headers)

    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-key-reused")
    assert other.headers["content-type"] == "application/problem+json"


BAD_REQUESTS = [
    ("malformed json", b'{"name": ', 400, "malformed-json"),
    ("wrong type", json.dumps({"name": 7}).encode(), 422, "validation-failed"),
    ("unknown field", json.dumps({"name": "A", "plan": "x"}).encode(), 422, "validation-failed"),
    ("missing field", b"{}", 422, "validation-failed"),
    ("empty name", json.dumps({"name": ""}).encode(), 422, "validation-failed"),
    ("rule: bad chars", json.dumps({"name": "<b>"}).encode(), 422, "validation-failed"),
    ("oversized", json.dumps({"name": "x" * 70_000}).encode(), 413, "body-too-large"),
]


@pytest.mark.parametrize(("case", "body", "status", "kind"), BAD_REQUESTS)
async def test_bad_input_gets_a_problem_and_stores_nothing(
    settings: Settings, ops_key: str, case: str, body: bytes, status: int, kind: str
) -> None:
    headers = {**auth(ops_key), "Content-Type": "application/json"}
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        answer = await http.post("/v1/tenants", content=body, headers=headers)
    assert answer.status_code == status, (case, answer.text)
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith("/" + kind)
    assert answer.json()["status"] == status
    with psycopg.connect(settings.database_url or "") as conn:
        stored = conn.execute(TENANT_EVENTS.format(settings.db_schema))
        assert stored.fetchone() == (0,)


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic abc"])
async def test_missing_or_wrong_credentials_are_a_401(
    settings: Settings, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        answer = await http.post("/v1/tenants", json={"name": "Acme"}, headers=headers)
        read = await http.get("/v1/tenants/00000000-0000-0000-0000-000000000000", headers=headers)
    assert (answer.status_code, read.status_code) == (401, 401)
    assert answer.json()["type"].endswith("/unauthenticated")


async def test_health_readiness_and_metrics(settings: Settings, ops_key: str) -> None:
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        await http.get("/healthz")
        health, ready = await http.get("/healthz"), await http.get("/readyz")
        metrics = await http.get("/metrics/")
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"postgres": "ok", "kafka": "ok"}
    assert 'gpucloud_http_request_duration_seconds_count{method="GET",route="/healthz"' in (
        metrics.text
    )


async def test_with_the_broker_down_commands_are_stored_and_relayed_when_it_returns(
    settings: Settings, ops_key: str
) -> None:
    from infra.embedded import EmbeddedBroker, free_port

    port = free_port()
    down = settings.with_(kafka_bootstrap_servers=f"127.0.0.1:{port}")
    async with api_server(down) as url, roles(down, "relay"):
        async with httpx.AsyncClient(base_url=url) as http:
            created = await http.post("/v1/tenants", json={"name": "Acme"}, headers=auth(ops_key))
            ready = await http.get("/readyz")
        assert created.status_code == 201
        assert ready.status_code == 503
        assert ready.json()["checks"]["kafka"].startswith("failed")
        folder = settings.data_dir / "late-broker"
        folder.mkdir(parents=True)
        broker = EmbeddedBroker(folder, port=port)
        broker.start()
        try:
            records = await eventually(
                lambda: read_topic(down.kafka_bootstrap_servers or "", "identity.tenant.v1", 3, 1),
                timeout=20,
            )
        finally:
            broker.stop()
    assert records[0].key.decode() == created.json()["id"]


async def test_with_postgres_down_commands_get_503_and_nothing_is_half_written(
    settings: Settings, ops_key: str
) -> None:
    from infra.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(settings.data_dir / "own-postgres")
    own = settings.with_(database_url=server.start())
    ops_key = issue_ops_key(own)
    try:
        async with api_server(own) as url, httpx.AsyncClient(base_url=url, timeout=15) as http:
            before = await http.post("/v1/tenants", json={"name": "Before"}, headers=auth(ops_key))
            server.stop()
            keyed = {**auth(ops_key), "Idempotency-Key": "during-1"}
            during = await http.post("/v1/tenants", json={"name": "During"}, headers=keyed)
            ready = await http.get("/readyz")
            server.start()
            after = await eventually(
                lambda: _created(http, ops_key, "After"), timeout=20, every=0.5
            )
            retried = await http.post("/v1/tenants", json={"name": "During"}, headers=keyed)
        with psycopg.connect(own.database_url or "") as conn:
            names = conn.execute(TENANT_EVENTS.format(own.db_schema)).fetchone()
    finally:
        server.stop()
    assert (before.status_code, after.status_code, retried.status_code) == (201, 201, 201)
    assert during.status_code == 503
    assert during.headers["Retry-After"] == "2"
    assert during.json()["type"].rsplit("/", 1)[1] in ("database-unavailable", "command-timeout")
    assert ready.status_code == 503 and ready.json()["checks"]["postgres"].startswith("failed")
    assert names == (3,)  # the retried command was stored once, whether or not it had landed


async def _created(http: httpx.AsyncClient, ops_key: str, name: str) -> httpx.Response | None:
    answer = await http.post("/v1/tenants", json={"name": name}, headers=auth(ops_key))
    return answer if answer.status_code == 201 else None
