"""A unit of work across contexts: load aggregates from several applications, decide, and
save them all in one transaction, again from the start when another writer won a race.

Some decisions span contexts and must not be half recorded: an allocation request and its
runway hold, a usage window and its ledger posting, a failed allocation with its node claim
released and its hold voided. ``AtomicSave`` (infra/eventstore.py ``save_together``) stores the
events of several applications in one PostgreSQL transaction; this module gives the handlers
the load-decide-save loop around it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.errors import NotFoundError
from handlers.base import ContextApplication
from handlers.retry import ATTEMPTS, retry_on_conflict

A = TypeVar("A", bound=Aggregate)
R = TypeVar("R")


class AtomicSave(Protocol):
    def __call__(self, parts: Sequence[tuple[Any, Sequence[Any]]]) -> None: ...


class Session:
    """The aggregates one attempt loaded or created, by application; each loaded once."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, UUID], tuple[ContextApplication, Aggregate]] = {}

    def get(self, app: ContextApplication, kind: type[A], aggregate_id: UUID) -> A:
        found = self.find(app, kind, aggregate_id)
        if found is None:
            raise NotFoundError(f"{kind.__name__.lower()} {aggregate_id} not found")
        return found

    def find(self, app: ContextApplication, kind: type[A], aggregate_id: UUID) -> A | None:
        seen = self._seen.get((app.name, aggregate_id))
        if seen is not None:
            return seen[1] if isinstance(seen[1], kind) else None
        found = app.find(kind, aggregate_id)
        if found is not None:
            self._seen[(app.name, aggregate_id)] = (app, found)
        return found

    def preload(self, app: ContextApplication, kind: type[A], ids: Sequence[UUID]) -> None:
        """Load many aggregates at once (two queries) before deciding on them one by one."""
        wanted = [i for i in ids if (app.name, i) not in self._seen]
        for aggregate_id, aggregate in app.find_many(kind, wanted).items():
            self._seen[(app.name, aggregate_id)] = (app, aggregate)

    def add(self, app: ContextApplication, aggregate: A) -> A:
        self._seen[(app.name, aggregate.id)] = (app, aggregate)
        return aggregate

    def changes(self) -> list[tuple[ContextApplication, list[Aggregate]]]:
        by_app: dict[str, tuple[ContextApplication, list[Aggregate]]] = {}
        for app, aggregate in self._seen.values():
            if aggregate.pending_events:
                by_app.setdefault(app.name, (app, []))[1].append(aggregate)
        return list(by_app.values())


class UnitOfWork:
    """Runs ``work(session)`` and saves what it changed in one transaction; retried on a lost
    race (the work must decide from what it loads, so a retry decides again)."""

    def __init__(self, save_together: AtomicSave, attempts: int = ATTEMPTS) -> None:
        self._save, self._attempts = save_together, attempts

    def run(self, work: Callable[[Session], R]) -> R:
        return retry_on_conflict(partial(self._once, work), attempts=self._attempts)

    def _once(self, work: Callable[[Session], R]) -> R:
        session = Session()
        result = work(session)
        changes = session.changes()
        if len(changes) == 1:  # one context: its own save (and its caches) will do
            app, aggregates = changes[0]
            app.save(*aggregates)
        elif changes:
            pending = {id(a): len(a.pending_events) for _, aggs in changes for a in aggs}
            self._save(changes)
            for app, aggregates in changes:  # as its own saves do:
                app.take_snapshots([(a, pending[id(a)]) for a in aggregates])
                app.keep(aggregates)
        return result
