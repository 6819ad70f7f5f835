"""`gpucloud up`: the whole system in one command, on embedded or real servers.

Starts embedded PostgreSQL and Tansu unless DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS name real
ones, records how to reach them in ``<data-dir>/stack.json`` (every other command reads it),
creates the topics, then runs each process role as a child process and restarts one that dies.
Ctrl-C or SIGTERM stops the children, then the broker, then PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from uuid import UUID

from rich.console import Console

from domain.identity import OWNER, KeyGrant
from handlers.base import id_for_key
from handlers.identity import Identity
from infra import messages
from infra.bootstrap import System, build_system, stack_file
from infra.embedded import EmbeddedBroker, EmbeddedPostgres
from infra.settings import Settings
from infra.topics import ensure_topics

ROLES = ("api", "relay", "projector", "worker")
STANDIN = "stripe-standin"  # a development tool, run only when no Stripe key is set
STANDIN_PORT_OFFSET = 9  # the stand-in listens on the API's port + 9
console = Console(stderr=True)


@dataclass
class Stack:
    settings: Settings
    postgres: EmbeddedPostgres | None = None
    broker: EmbeddedBroker | None = None
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_servers(self) -> Settings:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        db, kafka, epoch = s.database_url, s.kafka_bootstrap_servers, s.broker_epoch
        if not db:
            self.postgres = EmbeddedPostgres(s.data_dir)
            db = self.postgres.start()
        if not kafka:
            self.broker = EmbeddedBroker(s.data_dir)
            kafka = self.broker.start()
            epoch = f"embedded-{uuid.uuid4()}"  # memory storage: a new, empty broker
        s = s.with_(database_url=db, kafka_bootstrap_servers=kafka, broker_epoch=epoch)
        return with_stripe(s)

    @property
    def roles(self) -> tuple[str, ...]:
        return ROLES + ((STANDIN,) if self.settings.stripe_secret_key is None else ())

    def record(self, s: Settings) -> None:
        stack = {
            "database_url": s.database_url,
            "kafka": s.kafka_bootstrap_servers,
            "broker_epoch": s.broker_epoch,
            "api_url": f"http://{s.api_host}:{s.api_port}",
            "pid": os.getpid(),
            "postgres_pid": self.postgres.pid if self.postgres else None,
            "broker_pid": self.broker.pid if self.broker else None,
            "stripe_standin": s.stripe_api_base if STANDIN in self.roles else None,
        }
        path = stack_file(s.data_dir)
        path.write_text(json.dumps(stack, indent=2))
        path.chmod(0o600)

    def spawn(self, role: str, s: Settings) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": s.database_url or "",
            "KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers or "",
            "GPUCLOUD_BROKER_EPOCH": s.broker_epoch,
            "GPUCLOUD_API_PORT": str(s.api_port),
            "GPUCLOUD_DB_SCHEMA": s.db_schema,
            "GPUCLOUD_DATA_DIR": str(s.data_dir.resolve()),  # the local node's instances live here
            "GPUCLOUD_STRIPE_SECRET_KEY": s.stripe_secret_key or "",
            "GPUCLOUD_STRIPE_API_BASE": s.stripe_api_base,
            "GPUCLOUD_STRIPE_WEBHOOK_SECRETS": s.stripe_webhook_secrets,
            "GPUCLOUD_PUBLIC_URL": s.public_url,
        }
        if role in ROLES and role != "api":
            env["GPUCLOUD_METRICS_PORT"] = str(s.api_port + 1 + ROLES.index(role))
        cmd = [sys.executable, "-m", "gateways.cli", role]
        self.children[role] = subprocess.Popen(cmd, env=env)

    def stop(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for child in self.children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if self.broker:
            self.broker.stop()
        if self.postgres:
            self.postgres.stop()
        stack_file(self.settings.data_dir).unlink(missing_ok=True)


def with_stripe(s: Settings) -> Settings:
    """No Stripe key: point every role at the project's Stripe stand-in on loopback (a
    development tool: its checkout page's Pay button completes a payment, nothing is charged).
    With a key (test mode, say), the real Stripe is used."""
    api = f"http://{s.api_host}:{s.api_port}"
    public = s.public_url if "GPUCLOUD_PUBLIC_URL" in os.environ else api
    if s.stripe_secret_key:
        return s.with_(public_url=public)
    return s.with_(
        stripe_secret_key="sk_test_standin",
        stripe_api_base=f"http://127.0.0.1:{s.api_port + STANDIN_PORT_OFFSET}",
        stripe_webhook_secrets="whsec_standin",
        public_url=public,
    )


def seed(s: Settings) -> dict[str, str]:
    """First start only: a platform ops key and a demo tenant, their keys kept in the data dir
    (mode 0600) because a key is shown once and a newcomer needs one at once."""
    system = build_system(s)
    identity = system.identity
    try:
        now = system.clock()
        keys = {}
        for name, make in (
            ("ops_key", lambda: identity.issue_ops_key("gpucloud up", now).token),
            ("demo_key", lambda: _demo_owner_key(identity, now)),
        ):
            keys[name] = _kept(s.data_dir / name, make)
        keys["demo_sku"] = str(_demo_catalog(system, now))
        return keys
    finally:
        system.close_write_side()


def _demo_owner_key(identity: Identity, now: datetime) -> str:
    opened = identity.create_tenant("Demo", "gpucloud-demo-tenant", now, "demo@example.com")
    if opened.key is None:
        return identity.issue_key(KeyGrant(opened.tenant.id, opened.owner_id, OWNER), now).token
    return opened.key.token


def _demo_catalog(system: System, now: datetime) -> UUID:
    """A SKU, this machine as a local node with 4 (pretend) GPUs, and $10 of promotional
    credit for the demo tenant, so a first allocation can run at once. Idempotent."""
    sku = system.inventory.create_sku(
        name="1x demo GPU", gpu_model="demo", gpus=1, vcpus=2, ram_gib=4, disk_gib=10,
        regions=["local-dev-1"], price_per_gpu_hour=1_000_000, idempotency_key="gpucloud-demo-sku",
    )  # fmt: skip
    system.inventory.register_node(
        region="local-dev-1", gpu_model="demo", gpu_count=4, idempotency_key="gpucloud-demo-node"
    )
    tenant = id_for_key("tenant", "gpucloud-demo-tenant")
    system.ledgers.credit(tenant, "gpucloud-demo-credit", 10_000_000, now, source="promotion")
    return sku.id


def _kept(path: Path, make: Callable[[], str]) -> str:
    if path.exists():
        return path.read_text().strip()
    token = make()
    path.touch(mode=0o600)
    path.write_text(token)
    return token


def up(settings: Settings) -> None:
    stack = Stack(settings)
    stopping = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        with console.status("starting PostgreSQL and the broker"):
            s = stack.start_servers()
            keys = seed(s)  # also creates the event-store tables, before the roles race
            asyncio.run(
                ensure_topics(
                    s.kafka_bootstrap_servers or "", messages.topics(), s.kafka_partitions
                )
            )
            stack.record(s)
        for role in stack.roles:
            stack.spawn(role, s)
        _announce(s, keys)
        _supervise(stack, s, stopping)
    finally:
        console.print("stopping gpucloud")
        stack.stop()


def _supervise(stack: Stack, s: Settings, stopping: dict[str, bool]) -> None:
    while not stopping["now"]:
        for role, child in list(stack.children.items()):
            if child.poll() is not None and not stopping["now"]:
                console.print(f"[yellow]{role} exited ({child.returncode}); restarting[/]")
                stack.spawn(role, s)
        time.sleep(0.5)


def _announce(s: Settings, keys: dict[str, str]) -> None:
    api = f"http://{s.api_host}:{s.api_port}"
    console.print(f"[bold green]gpucloud is up[/] (data in {s.data_dir})")
    console.print(f"  API        {api}  (docs {api}/docs)")
    others = ", ".join(
        f"{role} :{s.api_port + 1 + i}" for i, role in enumerate(ROLES) if role != "api"
    )
    console.print(f"  metrics    {api}/metrics  ({others})")
    console.print(f"  PostgreSQL {s.database_url}")
    console.print(f"  Kafka      {s.kafka_bootstrap_servers}")
    console.print(f"  ops key    {keys['ops_key']}  (in {s.data_dir / 'ops_key'})")
    console.print(
        f"  demo key   {keys['demo_key']}  (tenant Demo's owner; {s.data_dir / 'demo_key'})"
    )
    console.print(
        f"  try        curl -X POST {api}/v1/allocations -H 'Authorization: Bearer "
        f"{keys['demo_key']}' -H 'Idempotency-Key: first' -H 'Content-Type: application/json' "
        f'-d \'{{"sku_id": "{keys["demo_sku"]}", "region": "local-dev-1"}}\'',
        soft_wrap=True,
    )
    console.print("Ctrl-C stops everything.")
