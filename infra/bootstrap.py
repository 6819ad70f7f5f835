"""Composition root: finds the running system and builds every adapter from settings."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from eventsourcing.application import Application
from psycopg_pool import AsyncConnectionPool

from handlers.allocations import Admission, Allocations
from handlers.identity import Identity
from handlers.inventory import Inventory
from handlers.ledgers import Ledgers
from handlers.payments import Payments
from handlers.ports import Clock
from infra.clock import wall_clock
from infra.db import async_pool, migrate, schema_lock, signing_key
from infra.eventstore import open_app, save_together
from infra.settings import Settings

STACK_FILE = "stack.json"


class SystemNotFoundError(RuntimeError):
    """Neither DATABASE_URL/KAFKA_BOOTSTRAP_SERVERS nor a running embedded stack was found."""


def stack_file(data_dir: Path) -> Path:
    return data_dir / STACK_FILE


def resolve(settings: Settings) -> Settings:
    """Fill in what the environment left out from the stack ``gpucloud up`` records."""
    if settings.database_url and settings.kafka_bootstrap_servers:
        return settings
    path = stack_file(settings.data_dir)
    if not path.exists():
        raise SystemNotFoundError(
            f"no DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS set and no running stack in "
            f"{settings.data_dir}: start one with `gpucloud up --data-dir {settings.data_dir}` "
            f"or set both variables"
        )
    stack: dict[str, Any] = json.loads(path.read_text())
    stand_in = stack.get("stripe_standin") if not settings.stripe_secret_key else None
    stripe = {} if not stand_in else {
        "stripe_secret_key": "sk_test_standin", "stripe_api_base": stand_in,
        "stripe_webhook_secrets": "whsec_standin",
    }  # fmt: skip
    return settings.with_(
        database_url=settings.database_url or stack["database_url"],
        kafka_bootstrap_servers=settings.kafka_bootstrap_servers or stack["kafka"],
        broker_epoch=stack.get("broker_epoch", settings.broker_epoch),
        **stripe,
    )


def producer_factory(settings: Settings) -> AIOKafkaProducer:
    """The relay's producer. Idempotence is a setting: on for real Kafka, Tansu rejects it."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=settings.kafka_idempotent_producer,
        linger_ms=2,
        max_batch_size=256 * 1024,
        request_timeout_ms=10_000,
    )


@dataclass
class System:
    """The write side (applications) and the read side (an async pool) of one deployment."""

    settings: Settings
    identity: Identity
    inventory: Inventory
    ledgers: Ledgers
    compute: Allocations
    payments: Payments
    pool: AsyncConnectionPool
    clock: Clock = wall_clock  # every component that asks the time asks this one
    signing_key: bytes = b""  # seals position tokens (cursors read it in the query)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def applications(self) -> list[Application[Any]]:
        return [self.identity, self.inventory, self.ledgers, self.compute, self.payments]

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()
        self.close_write_side()

    def close_write_side(self) -> None:
        for app in self.applications:
            app.close()


def build_system(settings: Settings, clock: Clock = wall_clock) -> System:
    url, schema = settings.database_url, settings.db_schema
    assert url, "resolve(settings) first"
    migrate(url, schema)
    with schema_lock(url, schema):
        identity = open_app(Identity, url, schema, settings.pg_connect_timeout)
        inventory = open_app(Inventory, url, schema, settings.pg_connect_timeout)
        ledgers = open_app(Ledgers, url, schema, settings.pg_connect_timeout)
        compute = open_app(Allocations, url, schema, settings.pg_connect_timeout)
        payments = open_app(Payments, url, schema, settings.pg_connect_timeout)
    admission = Admission(settings.tenant_gpu_quota, settings.runway_minutes)
    compute.bind(inventory, ledgers, save_together, admission)
    payments.bind(ledgers, save_together)
    pool = async_pool(url, schema)
    key = signing_key(url, schema)
    return System(settings, identity, inventory, ledgers, compute, payments, pool, clock, key)
