"""The write side in memory: the same applications on eventsourcing's in-memory (POPO)
persistence, bound by an in-memory joint save. Handler tests run on it in milliseconds; the
PostgreSQL store stays the one the integration and e2e tests use.

The joint save keeps the promise of ``save_together`` (infra/eventstore.py): the events of
several applications are all recorded or none is. Each POPO recorder guards its tables with a
lock; this takes every recorder's lock (in one order, so two joint saves never deadlock),
checks every batch against its recorder, then records them all. A lost race is the same
``IntegrityError`` as on PostgreSQL, so the unit of work retries it the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.application import Application
from eventsourcing.popo import POPOApplicationRecorder

from handlers.allocations import Allocations
from handlers.identity import Identity
from handlers.inventory import Inventory
from handlers.ledgers import Ledgers
from handlers.payments import Payments
from handlers.ports import Clock
from infra.clock import wall_clock


def memory_env() -> dict[str, str]:
    """eventsourcing settings for the in-memory store, spelled out as for PostgreSQL."""
    return {"PERSISTENCE_MODULE": "eventsourcing.popo"}


def save_together_in_memory(parts: Sequence[tuple[Application[Any], Sequence[Any]]]) -> None:
    """All of several in-memory applications' new events, or none of them."""
    ordered = sorted(parts, key=lambda part: part[0].name)
    batches = [
        (_recorder(app), [app.mapper.to_stored_event(e) for a in aggs for e in a.collect_events()])
        for app, aggs in ordered
    ]
    batches = [(recorder, stored) for recorder, stored in batches if stored]
    with contextlib.ExitStack() as locks:
        for recorder in dict.fromkeys(r for r, _ in batches):
            locks.enter_context(recorder._database_lock)
        for recorder, stored in batches:
            recorder._assert_uniqueness(stored)  # IntegrityError: a lost race, nothing written
        for recorder, stored in batches:
            recorder._update_table(stored)


def _recorder(app: Application[Any]) -> POPOApplicationRecorder:
    recorder = app.recorder
    if not isinstance(recorder, POPOApplicationRecorder):
        raise TypeError(f"{app.name} is not in memory: {type(recorder).__name__}")
    return recorder


@dataclass
class MemoryWriteSide:
    """The five applications in memory, wired as ``build_system`` wires them on PostgreSQL."""

    identity: Identity
    inventory: Inventory
    ledgers: Ledgers
    compute: Allocations
    payments: Payments
    clock: Clock


def build_memory_write_side(clock: Clock = wall_clock) -> MemoryWriteSide:
    env = memory_env()
    identity, inventory = Identity(env=env), Inventory(env=env)
    ledgers, compute = Ledgers(env=env), Allocations(env=env)
    compute.bind(inventory, ledgers, save_together_in_memory)
    payments = Payments(env=env)
    payments.bind(ledgers, save_together_in_memory)
    return MemoryWriteSide(identity, inventory, ledgers, compute, payments, clock)
