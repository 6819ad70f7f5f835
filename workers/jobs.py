"""Periodic jobs of the worker. Each is safe with several workers running it at once: the
aggregate decides, so of two workers expiring one hold exactly one records it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial

from infra import metrics
from infra.bootstrap import System
from infra.eventstore import event_metadata
from infra.ratelimit import forget_idle_buckets, refill_seconds
from projections.ledger import expired_holds

log = logging.getLogger("gpucloud.worker")
EXPIRY_BATCH = 200  # holds expired in one transaction


async def expire_holds(system: System, now: datetime | None = None) -> int:
    """Void every open hold past its expiry (found in the read model, decided by the ledger),
    EXPIRY_BATCH holds to a transaction; returns how many this worker expired."""
    moment = now or system.clock()
    async with system.pool.connection() as conn:
        due = await expired_holds(conn, moment)
    expired = 0
    for start in range(0, len(due), EXPIRY_BATCH):
        batch = due[start : start + EXPIRY_BATCH]
        with event_metadata(actor="system:worker", correlation_id=f"expire-{moment:%Y%m%dT%H%M%S}"):
            expired += await asyncio.to_thread(partial(system.ledgers.expire_holds, batch, moment))
    if expired:
        metrics.COMMANDS.labels("ledger.expire_hold", "expired").inc(expired)
    return expired


async def forget_idle_rate_limits(system: System) -> int:
    """Drop rate-limit buckets idle long enough to be full again (the API replicas add one per
    key in use; nothing else would ever remove them)."""
    s = system.settings
    idle = refill_seconds(s.rate_limit_per_second, s.rate_limit_burst)
    return await forget_idle_buckets(system.pool, idle)


async def run_every(
    seconds: float, job: Callable[[], Awaitable[object]], stop: asyncio.Event
) -> None:
    """Run ``job`` until ``stop``; a failing run is logged and retried next period."""
    while not stop.is_set():
        try:
            await job()
        except Exception:
            log.exception("a periodic job failed; retrying in %.0f s", seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
