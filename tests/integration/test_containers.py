"""The testcontainers path: the relay against real PostgreSQL 16 and Apache Kafka containers.

Runs only with GPUCLOUD_TESTCONTAINERS=1 and a Docker engine that answers; otherwise it skips
with the reason (``pytest -rs`` prints it). Real Kafka takes the idempotent producer that
Tansu refuses, so this is where ``GPUCLOUD_KAFKA_IDEMPOTENCE=true`` is exercised.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from gateways.processes import relays_for
from infra.bootstrap import build_system
from infra.cloudevents import event_id
from infra.messages.names import TENANT_TOPIC
from infra.settings import Settings
from tests import containers
from tests.support import read_topic

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[str, str]]:
    """(DATABASE_URL, bootstrap servers) of fresh containers, stopped after this module."""
    containers.require()
    with containers.postgres() as database_url, containers.kafka() as bootstrap:
        yield database_url, bootstrap


@pytest.fixture
def container_settings(servers: tuple[str, str]) -> Iterator[Settings]:
    database_url, bootstrap = servers
    schema = f"t_{secrets.token_hex(6)}"
    yield Settings(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        GPUCLOUD_DB_SCHEMA=schema,
        GPUCLOUD_BROKER_EPOCH=f"test-{secrets.token_hex(4)}",
        GPUCLOUD_KAFKA_IDEMPOTENCE=True,
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def test_relay_publishes_a_created_tenant_to_kafka_as_a_cloudevent(
    container_settings: Settings,
) -> None:
    settings = container_settings
    system = build_system(settings)
    await system.open()
    relay = relays_for(system)[0]
    try:
        opened = await asyncio.to_thread(
            system.identity.create_tenant, "Acme", None, datetime.now(UTC)
        )
        written = opened.tenant
        assert await relay.publish_pending() == 3  # the tenant, its owner, the owner's key
        assert await relay.publish_pending() == 0
        records = await read_topic(
            settings.kafka_bootstrap_servers or "", TENANT_TOPIC, settings.kafka_partitions, 1
        )
    finally:
        await relay.close()
        await system.close()

    [record] = records
    headers: dict[str, Any] = {k: v.decode() for k, v in record.headers}
    subject = str(written.id)
    assert record.key == subject.encode()
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_id"] == event_id(written.id, written.version)
    assert headers["ce_type"] == "cloud.gpu.tenant.created.v1"
    assert headers["ce_source"] == "/gpucloud/identity"
    assert headers["ce_subject"] == subject
    assert headers["ce_tenantid"] == subject
    assert headers["ce_sequence"] == str(written.version)
    assert headers["ce_correlationid"] == subject  # no command metadata: the aggregate id
    assert headers["content-type"] == "application/json"
    assert "ce_time" in headers
    payload = json.loads(record.value)
    assert set(payload) == {"schema_version", "tenant_id", "name", "created_at"}
    assert (payload["schema_version"], payload["tenant_id"], payload["name"]) == (
        1,
        subject,
        "Acme",
    )
