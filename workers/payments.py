"""The payments process manager: applies the Stripe events the webhook stored.

Each pass leases the due events of the inbox (infra/stripe_inbox.py), oldest first, and gives
each to the payments handler in a worker thread; the payment's change and its ledger postings
commit there in one transaction with the event id, so a pass that dies after the effect and
before marking the row re-applies it as a no-op. Per event:

- livemode other than the setting's, an unknown type, no payment of ours: ignored, counted
  (``gpucloud_stripe_events_ignored_total{reason}``);
- a charge or dispute whose payment is not known yet (its completion not seen): deferred, tried
  again after 1, 2, 4 ... 300 s; after ``MAX_TRIES`` it is ignored as ``unmatched``;
- a handler failure: tried again the same way, then ``failed`` (quarantined: the row stays for
  ops, with its error) and the others go on.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from functools import partial

from handlers.payments import Outcome
from infra import metrics
from infra import stripe_inbox as inbox
from infra.bootstrap import System
from infra.stripe_api import provider_event

log = logging.getLogger("gpucloud.payments")
MAX_TRIES = 20
BATCH = 100


async def payments_pass(system: System, now: datetime | None = None) -> int:
    """Apply the due events; how many were finished (applied or ignored or failed)."""
    now = now or system.clock()
    async with system.pool.connection() as conn:
        due = await inbox.take_due(conn, now, BATCH)
    finished = 0
    for event in due:
        finished += await _one(system, event, now)
    return finished


async def _one(system: System, event: inbox.Due, now: datetime) -> int:
    try:
        outcome = await _decide(system, event, now)
    except Exception as failure:  # one bad event must not stop the others
        log.exception("applying Stripe event %s failed", event.id)
        outcome = Outcome("deferred" if event.attempts < MAX_TRIES else "failed", repr(failure))
    async with system.pool.connection() as conn:
        if outcome.result == "deferred" and event.attempts < MAX_TRIES:
            wait = timedelta(seconds=min(2 ** (event.attempts - 1), 300))
            await inbox.defer(conn, event.id, outcome.reason, now + wait)
            return 0
        result = "ignored" if outcome.result == "deferred" else outcome.result
        await inbox.finish(conn, event.id, result, outcome.reason, now, outcome.payment_id)
    metrics.STRIPE_EVENTS.labels(result).inc()
    if result == "ignored":
        metrics.STRIPE_IGNORED.labels(outcome.reason).inc()
    return 1


async def _decide(system: System, event: inbox.Due, now: datetime) -> Outcome:
    if event.livemode is not system.settings.stripe_livemode:
        return Outcome("ignored", "livemode")
    parsed = provider_event(event.payload)
    return await asyncio.to_thread(partial(system.payments.apply, parsed, now))
