"""The auditor's replay: recompute every ledger event's hash and the chain, replay balances,
and check every invariant, from the stored events alone (never the read models).

A stream is one ledger's stored events as plain data: version, name (the stored topic's last
segment) and the state as decoded from the store, ``prev_hash`` and ``hash`` included. The
first problem of each stream stops that stream (what follows cannot be trusted); the other
streams go on. A deleted last event leaves a valid chain: compare the ``digest`` with one taken
earlier to catch that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from domain.ledger_hash import (
    PLATFORM_ACCOUNTS,
    ZERO_HASH,
    canonical_hash,
    cash_account,
    ledger_id_of,
)
from domain.ledger_terms import REJECTIONS

State = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class StoredLedgerEvent:
    version: int
    name: str
    state: State | None  # None: the stored bytes could not be decoded

    @classmethod
    def from_stored(cls, version: int, topic: str, state: State | None) -> StoredLedgerEvent:
        return cls(version, topic.rsplit(".", 1)[-1], state)


@dataclass(frozen=True)
class LedgerStream:
    ledger_id: UUID
    events: Iterable[StoredLedgerEvent]  # in version order, as the store returns them


@dataclass(frozen=True)
class Problem:
    ledger_id: UUID
    version: int
    what: str

    def __str__(self) -> str:
        return f"ledger {self.ledger_id} event {self.version}: {self.what}"


@dataclass(frozen=True)
class LedgerSummary:
    ledger_id: UUID
    tenant_id: UUID | None
    events: int  # verified events (up to the first problem)
    postings: int
    rejections: int
    open_holds: int
    posted: int
    held: int
    available: int
    floor: int
    last_hash: str
    problem: Problem | None


@dataclass(frozen=True)
class Report:
    ledgers: tuple[LedgerSummary, ...]
    events: int
    first_problem: Problem | None
    digest: str  # sha256 of "<ledger id>:<events>:<last hash>\n" per ledger, in id order

    @property
    def ok(self) -> bool:
        return self.first_problem is None

    @property
    def problems(self) -> tuple[Problem, ...]:
        return tuple(s.problem for s in self.ledgers if s.problem is not None)


def verify(
    streams: Iterable[LedgerStream], on_ledger: Callable[[LedgerSummary], None] | None = None
) -> Report:
    """Check every stream; ``on_ledger`` hears of each as it is done (a progress bar)."""
    summaries = []
    for stream in streams:
        summary = verify_stream(stream)
        summaries.append(summary)
        if on_ledger is not None:
            on_ledger(summary)
    return report_of(summaries)


def report_of(summaries: Iterable[LedgerSummary]) -> Report:
    """The report over ledgers verified one by one, in any grouping (workers, batches): the
    first problem is the first in the order given; the digest does not depend on order."""
    summaries = list(summaries)
    problems = [s.problem for s in summaries if s.problem is not None]
    return Report(
        tuple(summaries),
        sum(s.events for s in summaries),
        problems[0] if problems else None,
        digest(summaries),
    )


def digest(summaries: Iterable[LedgerSummary]) -> str:
    lines = sorted(f"{s.ledger_id}:{s.events}:{s.last_hash}\n" for s in summaries)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def verify_stream(stream: LedgerStream) -> LedgerSummary:
    replay = _Replay(stream.ledger_id)
    problem = None
    for stored in stream.events:
        what = replay.step(stored)
        if what is not None:
            problem = Problem(stream.ledger_id, stored.version, what)
            break
    else:
        if replay.version == 0:
            problem = Problem(stream.ledger_id, 0, "no events")
        elif replay.expect is not None:
            problem = Problem(stream.ledger_id, replay.version, f"{replay.expect} missing")
    return replay.summary(problem)


class _Replay:
    """One stream's state while it is replayed: balances, open holds, keys seen."""

    __slots__ = (
        "cash", "depleted", "expect", "floor", "held", "holds", "keys", "last_hash", "ledger_id",
        "ledger_text", "posted", "postings", "rejections", "tenant_id", "version",
    )  # fmt: skip

    def __init__(self, ledger_id: UUID) -> None:
        self.ledger_id, self.cash, self.last_hash = ledger_id, "", ZERO_HASH
        self.ledger_text = str(ledger_id)  # as hashed: once per stream, not once per event
        self.tenant_id: UUID | None = None
        self.expect: str | None = None  # the balance event the last posting calls for
        self.version = self.floor = self.posted = self.held = self.postings = self.rejections = 0
        self.depleted = False
        self.holds: dict[str, int | None] = {}  # hold id -> amount while open, None once closed
        self.keys: set[str] = set()

    def step(self, stored: StoredLedgerEvent) -> str | None:
        """Check one event; the problem, or None."""
        if stored.version != self.version + 1:
            return f"version {stored.version} after {self.version}: an event is missing or moved"
        if stored.state is None:
            return "the stored state cannot be decoded"
        try:
            return self._check(stored.name, stored.version, stored.state)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            return f"malformed {stored.name}: {error!r}"

    def _check(self, name: str, version: int, state: State) -> str | None:
        prev = self.last_hash
        if state.get("prev_hash") != prev:
            return "prev_hash is not the previous event's hash: the chain is broken"
        fields = dict(state)  # a copy and three deletions: faster than a comprehension
        del fields["hash"], fields["prev_hash"]
        fields.pop("__meta__", None)
        if canonical_hash(self.ledger_text, version, name, fields, prev) != state.get("hash"):
            return "the hash does not match the event: it was changed"
        if (version == 1) != (name == "Opened"):
            return "a stream starts with Opened, and only there"
        if self.expect is not None and name != self.expect:
            return f"{self.expect} missing before this event"
        check = _CHECKS.get(name)
        if check is None:
            return f"unknown ledger event {name!r}"
        before = self.posted - self.held
        what = check(self, state)
        if what is None:
            self.version, self.last_hash = version, state["hash"]
            self._expect(name, before)
        return what

    def _expect(self, name: str, before: int) -> None:
        """Which balance event must come next, if this one crossed the floor."""
        after = self.posted - self.held
        if name in ("BalanceDepleted", "BalanceRestored"):
            self.expect = None
        elif not self.depleted and after <= self.floor < before:
            self.expect = "BalanceDepleted"
        elif self.depleted and after > self.floor:
            self.expect = "BalanceRestored"

    def summary(self, problem: Problem | None) -> LedgerSummary:
        open_holds = sum(1 for amount in self.holds.values() if amount is not None)
        return LedgerSummary(
            self.ledger_id, self.tenant_id, self.version, self.postings, self.rejections,
            open_holds, self.posted, self.held, self.posted - self.held, self.floor,
            self.last_hash, problem,
        )  # fmt: skip


def _is_amount(value: object) -> bool:
    return type(value) is int and value > 0


def _opened(r: _Replay, s: State) -> str | None:
    tenant = s["tenant_id"] if isinstance(s["tenant_id"], UUID) else UUID(s["tenant_id"])
    if ledger_id_of(tenant) != r.ledger_id:
        return "the ledger id is not its tenant's"
    if type(s["floor"]) is not int or s["floor"] > 0:
        return "the floor is not an integer at most 0"
    r.tenant_id, r.cash, r.floor = tenant, cash_account(tenant), s["floor"]
    return None


def _posting(r: _Replay, s: State, kind: str, tenant_pays: bool | None) -> str | None:
    """The checks every posting shares. ``tenant_pays``: must cash be the debit leg (True),
    the credit leg (False), or either (None)."""
    debit, credit, amount = s["debit_account"], s["credit_account"], s["amount"]
    if s["kind"] != kind:
        return f"kind {s['kind']!r} on an event of kind {kind!r}"
    if not _is_amount(amount):
        return "the amount is not a positive integer"
    if debit == credit or r.cash not in (debit, credit):
        return "the legs are not this tenant's cash and one platform account"
    pays = debit == r.cash
    if (credit if pays else debit) not in PLATFORM_ACCOUNTS:
        return "the other leg is not a platform account"
    if tenant_pays is not None and pays != tenant_pays:
        return "the legs run the wrong way for this kind"
    if kind != "expire":
        if s["key"] in r.keys:
            return f"idempotency key {s['key']!r} was used before"
        r.keys.add(s["key"])
    r.postings += 1
    return None


def _moved(
    r: _Replay, s: State, kind: str, tenant_pays: bool | None, floor_checked: bool = True
) -> str | None:
    """A posting that moves posted money. One the tenant pays may not take the available
    balance below the floor, but a capture (``floor_checked`` False): it moves money already
    held, checked when the hold was placed, so it lowers nothing even when a claw-back took
    the balance below the floor since."""
    what = _posting(r, s, kind, tenant_pays)
    if what is None:
        paid = s["debit_account"] == r.cash
        r.posted += -s["amount"] if paid else s["amount"]
        if paid and floor_checked and r.posted - r.held < r.floor:
            return "the available balance went below the floor"
    return what


def _clawed_back(r: _Replay, s: State) -> str | None:
    """Like a refund, but the one posting allowed below the floor."""
    what = _posting(r, s, "clawback", True)
    if what is None:
        r.posted -= s["amount"]
    return what


def _debited(r: _Replay, s: State) -> str | None:
    if type(s["remainder"]) is not int or s["remainder"] < 0:
        return "the remainder is not a non-negative integer"
    return _moved(r, s, "debit", True)


def _held(r: _Replay, s: State) -> str | None:
    if s["hold_id"] in r.holds:
        return f"hold {s['hold_id']} was placed before"
    what = _posting(r, s, "hold", True)
    if what is None:
        r.holds[s["hold_id"]], r.held = s["amount"], r.held + s["amount"]
        if r.posted - r.held < r.floor:
            return "the hold took the available balance below the floor"
    return what


def _open_hold(r: _Replay, s: State) -> int:
    """The open hold's amount; raises ValueError when it is not open."""
    amount = r.holds.get(s["hold_id"])
    if amount is None:
        raise ValueError(f"hold {s['hold_id']} is not open")
    return amount


def _captured(r: _Replay, s: State) -> str | None:
    held = _open_hold(r, s)
    if not _is_amount(s["amount"]) or s["amount"] > held:
        return f"captured {s['amount']} of a hold of {held}"
    if s["released"] != held - s["amount"]:
        return "released is not the rest of the hold"
    r.holds[s["hold_id"]], r.held = None, r.held - held
    return _moved(r, s, "capture", True, floor_checked=False)


def _released(kind: str) -> Callable[[_Replay, State], str | None]:
    def check(r: _Replay, s: State) -> str | None:
        held = _open_hold(r, s)
        if s["amount"] != held:
            return f"released {s['amount']} of a hold of {held}"
        if kind == "expire" and s["key"] != f"expire:{s['hold_id']}":
            return "an expiry's key is not expire:<hold id>"
        r.holds[s["hold_id"]], r.held = None, r.held - held
        return _posting(r, s, kind, True)

    return check


def _keyed(r: _Replay, s: State) -> str | None:
    if s["key"] in r.keys:
        return f"idempotency key {s['key']!r} was used before"
    r.keys.add(s["key"])
    return None


def _shortfall(r: _Replay, s: State) -> str | None:
    if not _is_amount(s["remainder"]) or r.posted - r.held > r.floor:
        return "a shortfall while money was available"
    return _keyed(r, s)


def _rejected(r: _Replay, s: State) -> str | None:
    if s["reason"] not in REJECTIONS:
        return f"unknown rejection reason {s['reason']!r}"
    r.rejections += 1
    return _keyed(r, s)


def _crossing(depleted: bool) -> Callable[[_Replay, State], str | None]:
    def check(r: _Replay, s: State) -> str | None:
        available = r.posted - r.held
        if r.expect != ("BalanceDepleted" if depleted else "BalanceRestored"):
            return "a balance event without a crossing of the floor"
        if s["available"] != available or s["floor"] != r.floor:
            return f"the event says available {s['available']}, the replay {available}"
        r.depleted = depleted
        return None

    return check


_CHECKS: dict[str, Callable[[_Replay, State], str | None]] = {
    "Opened": _opened,
    "Credited": lambda r, s: _moved(r, s, "credit", False),
    "Debited": _debited,
    "Refunded": lambda r, s: _moved(r, s, "refund", True),
    "Adjusted": lambda r, s: _moved(r, s, "adjust", None),
    "ClawedBack": _clawed_back,
    "HoldPlaced": _held,
    "HoldCaptured": _captured,
    "HoldVoided": _released("void"),
    "HoldExpired": _released("expire"),
    "DebitShortfall": _shortfall,
    "PostingRejected": _rejected,
    "BalanceDepleted": _crossing(True),
    "BalanceRestored": _crossing(False),
}
