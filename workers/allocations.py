"""The worker's allocation jobs: the provisioning saga, billing, the force-release policy and
the reconciler. Each is safe with several workers at once: saga work is leased per allocation
(``FOR UPDATE SKIP LOCKED``), and every decision is the aggregates' (a second worker's billing
pass or force release finds nothing left to do).

Their inboxes come from the write side (infra/inboxes.py): each pass first follows its
context's notification log in PostgreSQL, so they go on while the relay, the broker or the
projector is down. The saga pass takes due rows of ``allocation_work``, steps each allocation,
and postpones a failed step with an exponential backoff (the alert is
``gpucloud_release_failures_total`` rising).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from functools import partial
from uuid import UUID

from domain.allocation import Allocation
from handlers.billing import FORCE_REASON, BillingPass, bill
from handlers.ports import NodeDriver
from handlers.provisioning import Provisioning, ReleaseNotConfirmedError, StepFailedError
from handlers.reconciler import Drift, Reconciler
from infra import inboxes as work
from infra import metrics
from infra.bootstrap import System
from infra.drivers import DriverConfig, driver_for
from infra.eventstore import event_metadata
from projections import catalog

log = logging.getLogger("gpucloud.worker")
SAGA_BATCH = 16
MAX_BACKOFF_SECONDS = 300.0


def driver_config(system: System) -> DriverConfig:
    s = system.settings
    config = DriverConfig(
        workspace_root=s.data_dir.resolve() / "instances", username=s.ssh_username
    )
    if s.instance_command:
        config = replace(config, command=tuple(shlex.split(s.instance_command)))
    if s.ssh_key_path:
        config = replace(config, client_keys=(s.ssh_key_path,))
    if s.ssh_known_hosts:
        config = replace(config, known_hosts=s.ssh_known_hosts)
    return config


def drivers_of(config: DriverConfig) -> Callable[[str], NodeDriver]:
    built: dict[str, NodeDriver] = {}

    def driver(kind: str) -> NodeDriver:
        if kind not in built:
            built[kind] = driver_for(kind, config)
        return built[kind]

    return driver


def provisioning_of(system: System, drivers: Callable[[str], NodeDriver]) -> Provisioning:
    async def candidates(allocation: Allocation) -> list[UUID]:
        sku = await asyncio.to_thread(system.inventory.get_sku, allocation.sku_id)
        async with system.pool.connection() as conn:
            return await catalog.placement_candidates(
                conn, allocation.region, sku.gpu_model, allocation.gpus
            )

    timeout = system.settings.driver_timeout_seconds
    return Provisioning(system.compute, drivers, candidates, system.clock, timeout)


async def follow_compute(system: System) -> int:
    """Bring ``allocation_work`` up to the compute log (every pass does this first)."""
    return await work.saga_inbox(system.pool, system.compute)()


async def follow_depletions(system: System) -> int:
    """Bring ``tenant_depletions`` up to the ledger log."""
    return await work.depletions_inbox(system.pool, system.ledgers)()


async def saga_pass(system: System, provisioning: Provisioning) -> int:
    """Step every allocation whose saga work is due; returns how many were stepped."""
    lease = system.settings.driver_timeout_seconds * 2 + 10
    await follow_compute(system)
    async with system.pool.connection() as conn:
        due = await work.take_due_work(conn, SAGA_BATCH, lease)
    await asyncio.gather(*(_step(system, provisioning, a, state) for a, state in due))
    return len(due)


async def _step(
    system: System, provisioning: Provisioning, allocation_id: UUID, state: str
) -> None:
    try:
        with event_metadata(actor="system:saga", correlation_id=f"saga-{allocation_id}"):
            after = await provisioning.advance(allocation_id)
        if system.settings.fault == f"saga.after:{state}":
            os._exit(137)  # test hook: the worker dies right after this step committed
        metrics.SAGA_STEPS.labels("ok").inc()
        log.debug("allocation %s stepped from %s to %s", allocation_id, state, after)
        return
    except StepFailedError as failed:
        error = str(failed)
        if isinstance(failed, ReleaseNotConfirmedError):
            metrics.RELEASE_FAILURES.inc()
    except Exception as unexpected:  # logged, and retried later with backoff
        error = f"{type(unexpected).__name__}: {unexpected}"
        log.exception("saga step of allocation %s failed", allocation_id)
    metrics.SAGA_STEPS.labels("retry").inc()
    async with system.pool.connection() as conn:
        await work.back_off_work(conn, allocation_id, state, error[:500], MAX_BACKOFF_SECONDS)


async def billing_pass(system: System, now: datetime | None = None) -> BillingPass:
    """Bill every due window of every billable allocation, a batch per transaction."""
    moment, total, after = now or system.clock(), BillingPass(), None
    await follow_compute(system)
    while True:
        async with system.pool.connection() as conn:
            due = await work.billable_allocations(
                conn, system.settings.billing_batch, moment, after
            )
        if not due:
            return total
        ids = [allocation for _, allocation in due]
        with event_metadata(actor="system:billing", correlation_id=f"billing-{moment:%Y%m%dT%H%M}"):
            done = await asyncio.to_thread(partial(bill, system.compute, ids, moment))
        _add(total, done)
        after = due[-1]


def _add(total: BillingPass, done: BillingPass) -> None:
    total.add(done)
    metrics.WINDOWS_BILLED.inc(done.windows)
    metrics.BILLED_MICRO.inc(done.debited)
    metrics.FORCED_RELEASES.inc(len(done.forced))


async def depletion_pass(system: System, now: datetime | None = None) -> int:
    """BalanceDepleted: force-release every running allocation of the tenant, once. A tenant
    topped up since (its ledger no longer depleted) keeps its allocations: the event is old
    news, as after a rebuild of the read model."""
    forced = 0
    await follow_depletions(system)
    await follow_compute(system)
    async with system.pool.connection() as conn:
        pending = await work.pending_depletions(conn)
    for tenant_id, ledger_version in pending:
        ledger = await asyncio.to_thread(system.ledgers.ledger, tenant_id)
        if ledger.depleted:
            forced += await _force_release_all(system, tenant_id, now or system.clock())
        async with system.pool.connection() as conn:
            await work.mark_depletion_handled(conn, tenant_id, ledger_version)
    metrics.FORCED_RELEASES.inc(forced)
    return forced


async def _force_release_all(system: System, tenant_id: UUID, now: datetime) -> int:
    async with system.pool.connection() as conn:
        running = await work.running_allocations(conn, tenant_id)
    forced = 0
    for allocation_id in running:
        with event_metadata(actor="system:policy", correlation_id=f"depleted-{tenant_id}"):
            release = partial(system.compute.force_release, allocation_id, FORCE_REASON, now)
            forced += int(await asyncio.to_thread(release))
    return forced


async def reconcile_pass(system: System, reconciler: Reconciler) -> Drift:
    await follow_compute(system)
    async with system.pool.connection() as conn:
        nodes = await catalog.all_node_ids(conn)
        running = await work.running_allocations(conn, None)
    with event_metadata(actor="system:reconciler", correlation_id="reconcile"):
        drift = await reconciler.reconcile(nodes, running)
    metrics.ORPHAN_INSTANCES.set(len(drift.orphans))
    metrics.LOST_INSTANCES.set(len(drift.lost))
    return drift
