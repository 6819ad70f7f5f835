"""Process roles: api, relay, projector, worker. Each builds its adapters from settings."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from functools import partial

import uvicorn
from prometheus_client import start_http_server

from gateways.http.app import create_app
from gateways.projector import PROJECTIONS, build_projector
from handlers.reconciler import Reconciler
from infra import messages
from infra.bootstrap import System, build_system, producer_factory
from infra.db import async_pool, migrate
from infra.observability import setup_tracing
from infra.relay import AdvisoryLock, Relay, RelayPositions
from infra.settings import Settings
from infra.stripe_standin import StandInOptions, StripeStandIn
from infra.topics import ensure_topics
from workers import allocations as allocation_jobs
from workers import jobs
from workers import payments as payment_jobs

log = logging.getLogger("gpucloud")


def serve_metrics(settings: Settings) -> None:
    """Roles without an HTTP API expose /metrics on their own port when one is given."""
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.api_host)


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve_api(settings: Settings) -> None:
    setup_tracing("gpucloud-api", settings.otlp_endpoint)
    app = create_app(build_system(settings))
    config = uvicorn.Config(
        app, host=settings.api_host, port=settings.api_port, log_config=None, access_log=False
    )
    await uvicorn.Server(config).serve()


def relays_for(system: System) -> list[Relay]:
    s = system.settings
    return [
        Relay(
            app,
            RelayPositions(system.pool, f"{s.db_schema}.{app.name}", s.broker_epoch),
            lambda: producer_factory(s),
            batch=s.relay_batch,
            poll=s.relay_poll_seconds,
            prepare=lambda: ensure_topics(
                s.kafka_bootstrap_servers or "", messages.topics(), s.kafka_partitions
            ),
        )
        for app in system.applications
    ]


async def run_relay(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Hot standby: wait for the advisory lock, then publish until stopped."""
    stop = stop or stop_on_signals()
    serve_metrics(settings)
    system = build_system(settings)
    await system.open()
    lock = AdvisoryLock(_plain(settings), f"gpucloud.relay.{settings.db_schema}")
    try:
        log.info("relay waiting for the advisory lock")
        await _until_stopped(lock.acquire(), stop)
        if stop.is_set():
            return
        log.info("relay holds the lock; publishing")
        relays = relays_for(system)
        for relay in relays:
            await relay.positions.forget_other_epochs()
        await asyncio.gather(*(r.run(stop) for r in relays))
        for relay in relays:
            await relay.close()
    finally:
        await lock.release()
        await system.close()


async def run_projector(settings: Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or stop_on_signals()
    serve_metrics(settings)
    assert settings.kafka_bootstrap_servers and settings.database_url
    provider = setup_tracing("gpucloud-projector", settings.otlp_endpoint)
    names = sorted({t for p in PROJECTIONS for t in p.topics})
    partitions = await ensure_topics(
        settings.kafka_bootstrap_servers, messages.topics(), settings.kafka_partitions
    )
    migrate(settings.database_url, settings.db_schema)
    pool = async_pool(settings.database_url, settings.db_schema)
    app = build_projector(settings, pool, {n: partitions[n] for n in names}, provider)
    try:
        await pool.open()
        await app.start()
        log.info("projector started: %s", ", ".join(p.name for p in PROJECTIONS))
        await stop.wait()
    finally:
        await app.stop()
        await pool.close()


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Hosts the periodic jobs and the process managers: hold expiry, the provisioning saga,
    billing, the force-release policy, the reconciler, the payments process manager (Stripe
    events from the webhook's inbox) and the rate-limit table's cleanup."""
    stop = stop or stop_on_signals()
    serve_metrics(settings)
    system = build_system(settings)
    await system.open()
    drivers = allocation_jobs.drivers_of(allocation_jobs.driver_config(system))
    provisioning = allocation_jobs.provisioning_of(system, drivers)
    reconciler = Reconciler(system.compute, drivers, system.clock, settings.driver_timeout_seconds)
    every, fast = settings.worker_interval_seconds, settings.saga_poll_seconds
    loops: list[tuple[float, Callable[[], Awaitable[object]]]] = [
        (every, partial(jobs.expire_holds, system)),
        (settings.rate_limit_cleanup_seconds, partial(jobs.forget_idle_rate_limits, system)),
        (fast, partial(allocation_jobs.saga_pass, system, provisioning)),
        (fast, partial(allocation_jobs.depletion_pass, system)),
        (every, partial(allocation_jobs.billing_pass, system)),
        (settings.reconcile_seconds, partial(allocation_jobs.reconcile_pass, system, reconciler)),
        (settings.payments_poll_seconds, partial(payment_jobs.payments_pass, system)),
    ]
    log.info("worker started: saga every %.1f s, billing every %.0f s", fast, every)
    try:
        await asyncio.gather(*(jobs.run_every(seconds, job, stop) for seconds, job in loops))
    finally:
        await system.close()


async def run_stripe_standin(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """The Stripe stand-in (a development and test tool) where ``GPUCLOUD_STRIPE_API_BASE``
    points, delivering signed webhooks to this deployment's API."""
    stop = stop or stop_on_signals()
    port = int(settings.stripe_api_base.rsplit(":", 1)[1].split("/")[0])
    hook = f"http://{settings.api_host}:{settings.api_port}/v1/webhooks/stripe"
    secret = (settings.webhook_secrets or ["whsec_standin"])[0]
    options = StandInOptions(
        secret_key=settings.stripe_secret_key or "sk_test_standin",
        webhook_url=hook,
        webhook_secret=secret,
    )
    stand_in = StripeStandIn(options)
    await stand_in.start(port=port)
    log.info("Stripe stand-in (development tool) on %s, webhooks to %s", stand_in.url, hook)
    try:
        await stop.wait()
    finally:
        await stand_in.stop()


def _plain(settings: Settings) -> str:
    assert settings.database_url
    return settings.database_url


async def _until_stopped(work: Awaitable[None], stop: asyncio.Event) -> None:
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not task.done():
        task.cancel()
