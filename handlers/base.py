"""What every context's application shares: typed loads, idempotent creation, and updates
that reload and decide again when another writer saved the same aggregate first."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    LRUCache,
    ProcessingEvent,
)
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, StoredEvent

from domain.errors import IdempotencyKeyReusedError, NotFoundError
from handlers.ports import StoreReads
from handlers.retry import ATTEMPTS, retry_on_conflict

KEY_NAMESPACE = uuid5(NAMESPACE_URL, "https://gpucloud.dev/idempotency")
MAX_EVENTS_PER_SAVE = 2000  # one save of ~8,000 events hung in psycopg's pipeline (bench)

A = TypeVar("A", bound=Aggregate)
R = TypeVar("R")


def request_hash(**fields: object) -> str:
    """A stable digest of a command's input, compared when an idempotency key comes back."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def id_for_key(kind: str, key: str | None) -> UUID:
    """The aggregate id a client key maps to: the same key always names the same aggregate."""
    return uuid5(KEY_NAMESPACE, f"{kind}:{key}") if key else uuid4()


@dataclass(frozen=True)
class Written:
    """What a command wrote: the aggregate and the version the read side must reach."""

    id: UUID
    version: int
    created: bool


def same_request(aggregate: Any, digest: str) -> Written:
    """The answer to a replayed creation, or the refusal of a reused key."""
    if aggregate.request_hash != digest:
        raise IdempotencyKeyReusedError("Idempotency-Key was used with a different request")
    return Written(aggregate.id, aggregate.version, created=False)


class TooManyEventsError(ValueError):
    """A save larger than the store can take in one transaction: split the batch."""


class OneByOne:
    """``StoreReads`` through the library's recorder API alone: a query per aggregate, on any
    store (the in-memory one included). infra gives PostgreSQL applications the batched
    reads (infra/store_reads.py)."""

    def events_after(self, recorder: Any, starts: Sequence[tuple[UUID, int]]) -> list[StoredEvent]:
        return [e for i, v in starts for e in recorder.select_events(i, gt=v or None)]

    def latest_snapshots(self, recorder: Any, ids: Sequence[UUID]) -> list[StoredEvent]:
        return [s for i in ids for s in recorder.select_events(i, desc=True, limit=1)]

    def drop_older_snapshots(self, recorder: Any, latest: Sequence[tuple[UUID, int]]) -> None:
        """In memory nothing grows on disk: snapshots stay."""

    def stream_rows(self, recorder: Any, ids: Sequence[UUID]) -> list[tuple[Any, ...]]:
        return [
            (n, e.originator_version, e.topic, e.state)
            for n, i in enumerate(ids, start=1)
            for e in recorder.select_events(i)
        ]


class ContextApplication(Application[UUID]):
    """An eventsourcing Application with the loads and retries every context needs.

    An application may keep, in memory, the aggregates as this process last saved them
    (``KEPT_MAXSIZE`` in its env, 0 for none; e.g. ``COMPUTE_KEPT_MAXSIZE``): ``find_many``
    then starts from them and reads only the events stored after them, usually none, instead
    of replaying from the latest snapshot on every pass. What is kept is a private copy,
    never handed out; the library's own cache fast-forwards its entries in place.
    """

    reads: StoreReads = OneByOne()  # infra sets the batched PostgreSQL reads (open_app)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        size = int(self.env.get("KEPT_MAXSIZE") or 0)
        self._kept: LRUCache[UUID, Aggregate] | None = LRUCache(size) if size > 0 else None

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        """Refuse, at once, a save so large that it would hang instead of failing; keep
        what was saved (see the class docstring)."""
        pending = sum(len(getattr(o, "pending_events", ())) for o in objs)
        if pending > MAX_EVENTS_PER_SAVE:
            raise TooManyEventsError(
                f"{pending} events in one save; save at most {MAX_EVENTS_PER_SAVE} at a time"
            )
        recordings = super().save(*objs, **kwargs)
        self.keep([o for o in objs if isinstance(o, Aggregate)])
        return recordings

    def keep(self, aggregates: Sequence[Aggregate]) -> None:
        """Remember copies of these aggregates, just saved (a joint save calls this)."""
        if self._kept is not None:
            for aggregate in aggregates:
                self._kept.put(aggregate.id, copy.deepcopy(aggregate))

    def kept(self, aggregate_id: UUID) -> Any:
        """A copy of the aggregate as this process last saved it, or None."""
        if self._kept is None:
            return None
        try:
            return copy.deepcopy(self._kept.get(aggregate_id))
        except KeyError:
            return None

    def forget(self, aggregate_id: UUID) -> None:
        if self._kept is not None:
            with contextlib.suppress(KeyError):
                self._kept.get(aggregate_id, evict=True)

    def get(self, kind: type[A], aggregate_id: UUID) -> A:
        found = self.find(kind, aggregate_id)
        if found is None:
            raise NotFoundError(f"{kind.__name__.lower()} {aggregate_id} not found")
        return found

    def find(self, kind: type[A], aggregate_id: UUID) -> A | None:
        """The aggregate, or None when there is none of this kind with that id."""
        try:
            found: object = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, kind) else None

    def update(
        self, kind: type[A], aggregate_id: UUID, change: Callable[[A], R], attempts: int = 0
    ) -> tuple[A, R]:
        """Load, change, save; on a lost race reload and decide again (handlers/retry.py)."""
        once = partial(self._update_once, kind, aggregate_id, change)
        return retry_on_conflict(once, attempts=attempts or ATTEMPTS)

    def _update_once(
        self, kind: type[A], aggregate_id: UUID, change: Callable[[A], R]
    ) -> tuple[A, R]:
        aggregate = self.get(kind, aggregate_id)
        result = change(aggregate)
        self.save(aggregate)
        return aggregate, result

    def find_many(self, kind: type[A], aggregate_ids: Sequence[UUID]) -> dict[UUID, A]:
        """Many aggregates in at most two queries (the latest snapshots of those not kept in
        memory, then the events after each) instead of one load each: for passes over
        thousands of aggregates (billing). Exact whoever wrote since; bypasses the library's
        cache; ids that are not of ``kind`` are left out."""
        ids = list(dict.fromkeys(aggregate_ids))
        if not ids:
            return {}
        found: dict[UUID, Any] = {}
        for aggregate_id in ids:
            if (kept := self.kept(aggregate_id)) is not None:
                found[aggregate_id] = kept
        missing = [i for i in ids if i not in found]
        start = self._latest_snapshots(missing) if missing else {}
        found.update({i: s.mutate(None) for i, s in start.items()})
        after = [(i, found[i].version if i in found else 0) for i in ids]
        for stored in self.reads.events_after(self.recorder, after):
            event: Any = self.mapper.to_domain_event(stored)
            found[event.originator_id] = event.mutate(found.get(event.originator_id))
        return {i: a for i, a in found.items() if isinstance(a, kind)}

    def _latest_snapshots(self, ids: list[UUID]) -> dict[UUID, Any]:
        if self.snapshots is None:
            return {}
        stored = self.reads.latest_snapshots(self.snapshots.recorder, ids)
        snapshots = (self.mapper.to_domain_event(s) for s in stored)
        return {s.originator_id: s for s in snapshots}

    def take_snapshots(self, saved: Sequence[tuple[Aggregate, int]]) -> None:
        """Snapshot each aggregate whose last ``events`` saved (``(aggregate, events)``)
        crossed a multiple of its snapshot interval, from the aggregate as it is in memory,
        all in one insert. The library instead reloads each from the store at the crossing
        version, one at a time."""
        if self.snapshots is None:
            return
        due = []
        for aggregate, events in saved:
            interval = self.snapshotting_intervals.get(type(aggregate))
            if (
                interval
                and aggregate.version // interval > (aggregate.version - events) // interval
            ):
                due.append(Aggregate.Snapshot.take(aggregate))
        if due:
            self.snapshots.put(due)
            self._drop_older_snapshots(due)

    def _drop_older_snapshots(self, taken: list[Any]) -> None:
        """Only an aggregate's latest snapshot is ever read (a load starts there; the auditor
        reads events, never snapshots): drop the older ones, or the table would grow by a row
        per interval per aggregate for ever (100k allocations: 14M rows a day)."""
        if self.snapshots is not None:
            latest = [(s.originator_id, s.originator_version) for s in taken]
            self.reads.drop_older_snapshots(self.snapshots.recorder, latest)

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        """Application.save's snapshots, taken as ``take_snapshots`` takes them."""
        counts = Counter(e.originator_id for e in processing_event.events)
        aggregates = processing_event.aggregates.items()
        self.take_snapshots([(a, counts[i]) for i, a in aggregates if isinstance(a, Aggregate)])

    def create_once(self, aggregate: A, digest: str) -> Written:
        """Save a new aggregate once per id: the same id and request again answer as the
        first time did, even when the two requests race."""
        existing = self.find(type(aggregate), aggregate.id)
        if existing is not None:
            return same_request(existing, digest)
        try:
            self.save(aggregate)
        except IntegrityError:  # the same key, saved by a concurrent request
            return same_request(self.get(type(aggregate), aggregate.id), digest)
        return Written(aggregate.id, aggregate.version, created=True)
