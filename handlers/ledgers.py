"""Ledger context: command handlers for the tenants' ledgers, and the auditor's reads.

Every command is load, decide, save. Concurrent writers on one ledger race on its version: the
store refuses the loser's save (``IntegrityError``) and the command reloads and decides again
against the winner's balance, so no interleaving can overdraw the floor. Many writers contend
on a busy ledger, hence more attempts than other contexts, with a jittered exponential backoff.
Inside one process, commands on the same ledger also queue on a lock (striped by ledger id):
threads of one process would otherwise reload and lose to each other, burning the attempts
that the races between processes need.

A refusal (insufficient funds, a closed hold) is itself recorded (``PostingRejected``) and
saved, under the same retry, before the domain error is raised; its replay raises it again.

Loading a ledger replays its stream from its latest snapshot (one every 100 events), and the
application keeps the last 1,000 ledgers it used in memory (override with
``LEDGER_AGGREGATE_CACHE_MAXSIZE``), reading only their new events on the next load.

A command decides on the ledger as this process last saved it, without reading the store
first: the save is the check. If another writer moved the ledger since, the save fails on the
version, the ledger is reloaded and the command decides again. A command that would write
nothing (a replayed key, a closed hold) is decided again on the ledger read fresh, so every
answer rests either on a save the store accepted or on a fresh read. This saves one round
trip per posting, a third of a posting's time.

Only ``credit`` opens a ledger that is not open yet (with floor 0): money that arrives must not
bounce for want of a ledger. Every other command raises ``NotFoundError`` on an unknown ledger.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import IntegrityError, JSONTranscoder, Transcoding

from domain.errors import DomainError, NotFoundError, ValidationFailedError
from domain.ledger import Ledger
from domain.ledger_hash import ledger_id_of
from domain.ledger_terms import Balances, Hold, Receipt, Rejection, client_key
from handlers.base import ContextApplication, Written
from handlers.retry import retry_on_conflict

SNAPSHOT_EVERY = 100
LOCK_STRIPES = 64
OPENED_TOPIC = "gpucloud.ledger.Ledger.Opened"
R = TypeVar("R")


@dataclass(frozen=True)
class _Refused:
    """A domain refusal carried out of the update, so its recorded event is saved first."""

    error: DomainError


class _AsFields(Transcoding):
    """A frozen value of the ledger's (Receipt, Rejection, Hold) stored as its fields: what a
    ledger snapshot needs to hold its outcomes and holds. Events never carry these."""

    def __init__(self, kind: type[Any]) -> None:
        self.type, self.name = kind, f"ledger_{kind.__name__.lower()}"

    def encode(self, obj: Any) -> dict[str, Any]:
        return {f.name: getattr(obj, f.name) for f in fields(obj)}

    def decode(self, data: dict[str, Any]) -> Any:
        return self.type(**data)


class Ledgers(ContextApplication):
    """The ledger context's application: one notification log, relayed to ledger.* topics."""

    name = "ledger"
    # see the module docstring; KEPT_MAXSIZE: the ledgers commands decide on (base.py)
    env = {"AGGREGATE_CACHE_MAXSIZE": "1000", "KEPT_MAXSIZE": "1000"}
    # A ledger's history grows with every posting (a usage window a minute per allocation):
    # a process that does not hold it starts from its latest snapshot, not from event 1. A
    # snapshot holds every remembered key's outcome, but usage windows are not remembered
    # (Ledger.charge_usage), so snapshots stay small and can be frequent: a billing worker
    # that restarts replays at most 99 events per ledger.
    snapshotting_intervals = {Ledger: SNAPSHOT_EVERY}

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        for kind in (Receipt, Rejection, Hold):
            transcoder.register(_AsFields(kind))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stripes = tuple(threading.Lock() for _ in range(LOCK_STRIPES))

    def open(self, tenant_id: UUID, now: datetime, floor: int = 0) -> Written:
        """Open a tenant's ledger. Opening an open one with the same floor changes nothing;
        with another floor it is refused (the floor is set once, at opening)."""
        ledger = Ledger.open(tenant_id, now, floor)
        stored = self._open_once(ledger)
        if stored.floor != ledger.floor:
            raise ValidationFailedError(f"the ledger is open already, with floor {stored.floor}")
        return Written(stored.id, stored.version, created=stored is ledger)

    def credit(
        self, tenant_id: UUID, key: str, amount: int, now: datetime, source: str = "payment"
    ) -> Receipt:
        """Money in. A first posting opens the ledger (floor 0), in the same transaction."""
        return self._decide(
            tenant_id, lambda ledger: ledger.credit(key, amount, now, source), opening=now
        )

    def debit(self, tenant_id: UUID, key: str, amount: int, now: datetime) -> Receipt:
        return self._decide(tenant_id, lambda ledger: ledger.debit(key, amount, now))

    def debit_up_to(self, tenant_id: UUID, key: str, amount: int, now: datetime) -> Receipt:
        """Take what is available (``taken``); ``remainder`` is what could not be taken."""
        return self._decide(tenant_id, lambda ledger: ledger.debit_up_to(key, amount, now))

    def hold(
        self, tenant_id: UUID, key: str, amount: int, expires_at: datetime, now: datetime
    ) -> Receipt:
        return self._decide(tenant_id, lambda ledger: ledger.hold(key, amount, expires_at, now))

    def capture(
        self, tenant_id: UUID, key: str, hold_id: str, amount: int | None, now: datetime
    ) -> Receipt:
        return self._decide(tenant_id, lambda ledger: ledger.capture(key, hold_id, amount, now))

    def void(self, tenant_id: UUID, key: str, hold_id: str, now: datetime) -> Receipt:
        return self._decide(tenant_id, lambda ledger: ledger.void(key, hold_id, now))

    def refund(self, tenant_id: UUID, key: str, amount: int, now: datetime) -> Receipt:
        return self._decide(tenant_id, lambda ledger: ledger.refund(key, amount, now))

    def claw_back(
        self, tenant_id: UUID, key: str, amount: int, reason: str, now: datetime
    ) -> Receipt:
        """Money the payment provider took back; posted even below the floor."""
        return self._decide(tenant_id, lambda ledger: ledger.claw_back(key, amount, reason, now))

    def adjust(self, tenant_id: UUID, key: str, amount: int, reason: str, now: datetime) -> Receipt:
        """An operator's correction; ``key`` is the operator's, kept in the clients' namespace."""
        kept = client_key(key)
        return self._decide(  # a first adjustment opens the ledger
            tenant_id, lambda ledger: ledger.adjust(kept, amount, reason, now), opening=now
        )

    def expire_holds(self, due: Sequence[tuple[UUID, str]], now: datetime) -> int:
        """Expire many holds (``(tenant id, hold id)`` each) in one transaction; how many
        this call expired (a hold closed already, or unknown, counts nothing: of two workers
        racing for one hold, one counts it)."""
        outcomes = self.decide_many(
            [
                (tenant, functools.partial(_expire, hold_id=hold_id, now=now))
                for tenant, hold_id in due
            ]
        )
        return sum(outcome is True for outcome in outcomes)

    def balances(self, tenant_id: UUID) -> Balances:
        return self.ledger(tenant_id).balances()

    def expired_holds(self, tenant_id: UUID, now: datetime) -> tuple[str, ...]:
        """The open holds of a tenant whose expiry has come (for the expiry worker)."""
        return self.ledger(tenant_id).expired_holds(now)

    def ledger(self, tenant_id: UUID) -> Ledger:
        return self.get(Ledger, ledger_id_of(tenant_id))

    def ledger_ids(self, page: int = 1000) -> Iterator[UUID]:
        """Every ledger's id, in the order they were opened (from the notification log)."""
        start: int | None = None
        while notifications := self.recorder.select_notifications(
            start, page, topics=[OPENED_TOPIC], inclusive_of_start=start is None
        ):
            yield from (UUID(str(n.originator_id)) for n in notifications)
            start = notifications[-1].id

    def stream_rows(self, ledger_ids: list[UUID]) -> list[tuple[Any, ...]]:
        """The query behind ``streams``: (position in ``ledger_ids`` from 1, version, topic,
        state bytes) rows, ledger by ledger in version order. Apart from the decoding, so an
        auditor can read the next batch while it checks this one."""
        return self.reads.stream_rows(self.recorder, ledger_ids)

    def _open_once(self, ledger: Ledger) -> Ledger:
        """The ledger as stored: the one given, unless it was open already."""
        stored = self.find(Ledger, ledger.id)
        if stored is not None:
            return stored
        try:
            self.save(ledger)
        except IntegrityError:  # a concurrent opening won
            return self.get(Ledger, ledger.id)
        return ledger

    def decide_many(
        self, decisions: Sequence[tuple[UUID, Callable[[Ledger], R]]]
    ) -> list[R | DomainError]:
        """Many tenants' decisions (each ``(tenant id, decide)``, applied in order) recorded in
        ONE transaction; each answer, or the refusal it met, in the same order. For passes
        over many ledgers (hold expiry, bulk postings): one commit instead of one each. A
        lost race decides the whole batch again; the ledgers must be open."""
        outcomes = self._decided([(ledger_id_of(t), decide) for t, decide in decisions])
        return [o.error if isinstance(o, _Refused) else o for o in outcomes]

    def _decide(
        self, tenant_id: UUID, decide: Callable[[Ledger], R], opening: datetime | None = None
    ) -> R:
        """Load, decide, save (a recorded refusal too), retried on lost races; then answer.
        With ``opening``, a ledger not open yet is opened then (floor 0) and saved with the
        decision in one transaction; without it, a missing ledger is refused."""
        ledger_id = ledger_id_of(tenant_id)
        opens = {} if opening is None else {ledger_id: lambda: Ledger.open(tenant_id, opening)}
        [outcome] = self._decided([(ledger_id, decide)], opens)
        if isinstance(outcome, _Refused):
            raise outcome.error
        return outcome

    def _decided(
        self,
        decisions: list[tuple[UUID, Callable[[Ledger], R]]],
        opens: Mapping[UUID, Callable[[], Ledger]] | None = None,
    ) -> list[R | _Refused]:
        """Decide on the ledgers as last saved here, save once, retried on lost races; then
        decide again, on fresh ledgers, what was decided on ledgers this batch did not write
        (module docstring). Threads of this process queue on the ledgers' lock stripes."""
        ids = list(dict.fromkeys(ledger_id for ledger_id, _ in decisions))
        stripes = sorted({i.int % LOCK_STRIPES for i in ids})  # in order: no deadlock
        with contextlib.ExitStack() as held:
            for stripe in stripes:
                held.enter_context(self._stripes[stripe])
            outcomes, unchecked = self._retried(
                ids, lambda: self._attempt(decisions, True, opens or {})
            )
            if unchecked:
                again = [n for n, (ledger_id, _) in enumerate(decisions) if ledger_id in unchecked]
                redo = [decisions[n] for n in again]
                fresh, _ = self._retried(
                    list(unchecked), lambda: self._attempt(redo, False, opens or {})
                )
                for n, outcome in zip(again, fresh, strict=True):
                    outcomes[n] = outcome
        return outcomes

    def _attempt(
        self,
        decisions: list[tuple[UUID, Callable[[Ledger], R]]],
        trust: bool,
        opens: Mapping[UUID, Callable[[], Ledger]],
    ) -> tuple[list[R | _Refused], set[UUID]]:
        """One try: the outcomes, and the ledgers decided on as cached that nothing wrote. A
        missing ledger named in ``opens`` is opened here (a concurrent opening then loses the
        save's race and the retry reads it)."""
        ledgers, cached = self._load([i for i, _ in decisions], trust)
        outcomes: list[R | _Refused] = []
        for ledger_id, decide in decisions:
            try:
                ledger = ledgers.get(ledger_id)
                if ledger is None and ledger_id in opens:
                    ledger = ledgers[ledger_id] = opens[ledger_id]()
                if ledger is None:
                    raise NotFoundError(f"ledger {ledger_id} not found")
                outcomes.append(decide(ledger))
            except DomainError as refused:
                outcomes.append(_Refused(refused))
        changed = [ledger for ledger in ledgers.values() if ledger.pending_events]
        unchecked = {i for i in cached if not ledgers[i].pending_events}
        if changed:
            self.save(*changed)  # which keeps them as saved
        for ledger_id in unchecked:
            self.forget(ledger_id)
        return outcomes, unchecked

    def _load(self, ids: list[UUID], trust: bool) -> tuple[dict[UUID, Ledger], set[UUID]]:
        """Copies of the ledgers as last saved here (when ``trust``), the others read fresh
        (one read, or two queries for many); and which ids came from memory."""
        ledgers: dict[UUID, Ledger] = {}
        for ledger_id in dict.fromkeys(ids):
            if trust and (kept := self.kept(ledger_id)) is not None:
                ledgers[ledger_id] = kept
        cached = set(ledgers)
        missing = [i for i in dict.fromkeys(ids) if i not in cached]
        if len(missing) == 1:
            found = self.find(Ledger, missing[0])  # the library's cache, fast-forwarded
            ledgers.update({missing[0]: found} if found is not None else {})
        elif missing:
            ledgers.update(self.find_many(Ledger, missing))
        return ledgers, cached

    def _retried(self, ledger_ids: list[UUID], run: Callable[[], R]) -> R:
        """``run`` under the one retry policy; a lost race forgets the kept ledgers."""

        def forget() -> None:  # another writer moved a ledger: read them fresh
            for ledger_id in ledger_ids:
                self.forget(ledger_id)

        return retry_on_conflict(run, forget)


def _expire(ledger: Ledger, hold_id: str, now: datetime) -> bool:
    return ledger.expire(hold_id, now)
