"""Ledger snapshots against real PostgreSQL: a process that never saw a ledger loads it from its
latest snapshot, and gets exactly what replaying every event gives, idempotency included."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from domain.ledger import Ledger
from domain.ledger_hash import ledger_id_of
from domain.ledger_terms import InsufficientFundsError
from handlers.ledgers import SNAPSHOT_EVERY, Ledgers
from infra.db import migrate
from infra.eventstore import open_app
from infra.settings import Settings

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
POSTINGS = 2 * SNAPSHOT_EVERY + 30


def test_a_ledger_loads_from_its_snapshot_as_it_would_replay(settings: Settings) -> None:
    url, schema = settings.database_url or "", settings.db_schema
    migrate(url, schema)
    writer = open_app(Ledgers, url, schema)
    tenant = uuid4()
    try:
        writer.credit(tenant, "pay", 10_000, NOW)
        hold = writer.hold(tenant, "runway", 50, NOW + timedelta(hours=1), NOW)
        for k in range(POSTINGS):  # past two snapshot intervals
            writer.debit(tenant, f"use-{k}", 3, NOW + timedelta(seconds=k))
        with pytest.raises(InsufficientFundsError):
            writer.debit(tenant, "too-much", 10_000, NOW)  # a refusal is remembered too
    finally:
        writer.close()

    fresh = open_app(Ledgers, url, schema)  # no cache: snapshot + the events after it
    try:
        snapshots = fresh.snapshots
        assert snapshots is not None
        kept = [s.originator_version for s in snapshots.get(ledger_id_of(tenant))]
        assert len(kept) == 1 and kept[0] >= 2 * SNAPSHOT_EVERY  # the older one was dropped
        loaded = fresh.ledger(tenant)
        replayed = _replay_all(fresh.events.get(ledger_id_of(tenant)))
        assert loaded.version == replayed.version and loaded.balances() == replayed.balances()
        assert loaded.outcomes == replayed.outcomes and loaded.holds == replayed.holds
        assert loaded.last_hash == replayed.last_hash
        again = fresh.debit(tenant, "use-7", 3, NOW + timedelta(seconds=7))
        assert again.replayed and loaded.balances().posted == 10_000 - 3 * POSTINGS
        with pytest.raises(InsufficientFundsError):
            fresh.debit(tenant, "too-much", 10_000, NOW)
        assert hold.hold_id in fresh.ledger(tenant).holds
    finally:
        fresh.close()


def _replay_all(events: Iterable[Any]) -> Ledger:
    """Replay from event 1, ignoring any snapshot."""
    aggregate: Any = None
    for event in events:
        aggregate = event.mutate(aggregate)
    assert isinstance(aggregate, Ledger)
    return aggregate
