"""Random sequences of ledger commands (hypothesis stateful testing) against a plain model.

After every step: available never below the floor, the aggregate's balances equal the model's,
and the auditor's replay of the events stored so far (through the JSON transcoder) is ok and
ends on the same balances.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from eventsourcing.application import Application
from eventsourcing.persistence import Mapper
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from domain.errors import DomainError, IdempotencyKeyReusedError, NotFoundError
from domain.ledger import Ledger
from domain.ledger_terms import (
    HoldAmountExceededError,
    HoldNotOpenError,
    InsufficientFundsError,
    Receipt,
)
from domain.ledger_verify import LedgerStream, StoredLedgerEvent, verify
from infra.auditor_reads import auditor_state
from infra.messages import WIRE
from projections.envelope import Envelope
from projections.ledger import POSTINGS, RELEASES, cash_delta

START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
amounts = st.integers(min_value=1, max_value=1_000)
Outcome = Receipt | type[DomainError] | bool
Expected = int | type[DomainError] | None


@dataclass
class ModelHold:
    amount: int
    expires_at: datetime
    open: bool = True


@dataclass
class Model:
    """What the ledger should hold, kept without any of its code."""

    floor: int
    posted: int = 0
    holds: dict[str, ModelHold] = field(default_factory=dict)
    depleted: bool = False
    clawed_back: bool = False  # a claw-back may have taken available below the floor

    @property
    def held(self) -> int:
        return sum(h.amount for h in self.holds.values() if h.open)

    @property
    def available(self) -> int:
        return self.posted - self.held

    def covers(self, amount: int) -> bool:
        return self.available - amount >= self.floor


@dataclass(frozen=True)
class Request:
    operation: str
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...] = ()


POSTED_TYPES = {*POSTINGS, *RELEASES}


class LedgerMachine(RuleBasedStateMachine):
    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.mapper: Mapper[Any] = Application(
            env={"PERSISTENCE_MODULE": "eventsourcing.popo"}
        ).mapper
        self.stored: list[StoredLedgerEvent] = []
        self.answers: dict[str, tuple[Request, Outcome]] = {}
        self.now, self.serial = START, 0
        self.read_model = [0, 0]  # posted, held: as the ledger projection computes them

    @initialize(floor=st.sampled_from([0, 0, -300]), balance=st.integers(0, 3_000))
    def open_ledger(self, floor: int, balance: int) -> None:
        self.ledger = Ledger.open(uuid4(), self.now, floor)
        self.model = Model(floor, posted=balance)
        if balance:
            self.ledger.credit("opening-balance", balance, self.now)
        self.store()

    # Commands with new keys: the model says what must happen, the ledger must agree

    @rule(amount=st.integers(1, 3_000), promotion=st.booleans())
    def credit(self, amount: int, promotion: bool) -> None:
        before, source = self.model.available, "promotion" if promotion else "payment"
        self.model.posted += amount
        self.expect(Request("credit", (amount,), (("source", source),)), amount, before)

    @rule(amount=amounts, refund=st.booleans())
    def debit_or_refund(self, amount: int, refund: bool) -> None:
        before, refused = self.model.available, not self.model.covers(amount)
        self.model.posted -= 0 if refused else amount
        request = Request("refund" if refund else "debit", (amount,))
        self.expect(request, InsufficientFundsError if refused else amount, before)

    @rule(amount=amounts)
    def debit_up_to(self, amount: int) -> None:
        before = self.model.available
        taken = max(0, min(amount, before - self.model.floor))
        self.model.posted -= taken
        receipt = self.expect(Request("debit_up_to", (amount,)), taken, before)
        assert isinstance(receipt, Receipt) and receipt.remainder == amount - taken

    @rule(target=holds, amount=st.integers(1, 500), minutes=st.integers(10, 240))
    def hold(self, amount: int, minutes: int) -> Any:
        before, expires_at = self.model.available, self.now + timedelta(minutes=minutes)
        refused = not self.model.covers(amount)
        expected = InsufficientFundsError if refused else amount
        receipt = self.expect(Request("hold", (amount, expires_at)), expected, before, later=True)
        if not isinstance(receipt, Receipt) or receipt.hold_id is None:
            return multiple()
        self.model.holds[receipt.hold_id] = ModelHold(amount, expires_at)
        self.crossed(before)  # now that the model holds it too
        return receipt.hold_id

    @rule(hold_id=holds, part=st.none() | st.integers(1, 600))
    def capture(self, hold_id: str, part: int | None) -> None:
        before, hold = self.model.available, self.model.holds.get(hold_id)
        expected: Expected = self.hold_refusal(hold, capturing=True)
        if hold is not None and expected is None:
            taken = hold.amount if part is None else part
            expected = HoldAmountExceededError if taken > hold.amount else taken
        if isinstance(expected, int) and hold is not None:
            self.model.posted -= expected
            hold.open = False
        self.expect(Request("capture", (hold_id, part)), expected, before)

    @rule(hold_id=holds)
    def void(self, hold_id: str) -> None:
        before, hold = self.model.available, self.model.holds.get(hold_id)
        expected: Expected = self.hold_refusal(hold, capturing=False)
        if hold is not None and expected is None:
            hold.open, expected = False, hold.amount
        self.expect(Request("void", (hold_id,)), expected, before)

    @rule(void=st.booleans())
    def capture_or_void_an_unknown_hold(self, void: bool) -> None:
        request = (
            Request("void", ("no-such-hold",))
            if void
            else Request("capture", ("no-such-hold", None))
        )
        self.expect(request, NotFoundError, self.model.available)

    @rule(hold_id=holds, wait=st.booleans())
    def expire(self, hold_id: str, wait: bool) -> None:
        """The worker's expiry, at once or once the hold is due."""
        before, hold = self.model.available, self.model.holds[hold_id]
        self.now = max(self.now, hold.expires_at) if wait else self.now
        due = hold.open and self.now >= hold.expires_at
        hold.open = hold.open and not due
        assert self.ledger.expire(hold_id, self.now) is due
        self.crossed(before)
        self.store()

    @rule(amount=amounts, negative=st.booleans())
    def adjust(self, amount: int, negative: bool) -> None:
        before = self.model.available
        refused = negative and not self.model.covers(amount)
        self.model.posted += 0 if refused else (-amount if negative else amount)
        request = Request("adjust", (-amount if negative else amount, "correction"))
        self.expect(request, InsufficientFundsError if refused else amount, before)

    @rule(amount=amounts)
    def claw_back(self, amount: int) -> None:
        """Never refused: the only way below the floor."""
        before = self.model.available
        self.model.posted -= amount
        self.model.clawed_back = True
        self.expect(Request("claw_back", (amount, "refund")), amount, before)

    @rule(minutes=st.integers(1, 90))
    def advance(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    # Retries of keys already answered

    @precondition(lambda self: self.answers)
    @rule(data=st.data())
    def retry_the_same_request(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.answers)))
        request, first = self.answers[key]
        again = self.call(key, request)
        if isinstance(first, Receipt):
            assert again == replace(first, replayed=True)
        else:
            assert again is first
        self.store(expect_none=True)

    @precondition(lambda self: self.answers)
    @rule(data=st.data())
    def reuse_a_key_for_another_request(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.answers)))
        request, _ = self.answers[key]
        other = Request("credit", (request.args[0] + 1 if request.operation == "credit" else 1,))
        assert self.call(key, other) is IdempotencyKeyReusedError
        self.store(expect_none=True)

    # Checks after every step

    @invariant()
    def available_never_below_the_floor(self) -> None:
        """Unless a claw-back took it there (the payer's money was taken back)."""
        if hasattr(self, "ledger") and not self.model.clawed_back:
            assert self.ledger.available >= self.ledger.floor

    @invariant()
    def balances_match_the_model(self) -> None:
        if hasattr(self, "ledger"):
            model, ledger = self.model, self.ledger
            assert (ledger.posted, ledger.held, ledger.available) == (
                model.posted, model.held, model.available,
            )  # fmt: skip
            assert ledger.depleted is model.depleted

    @invariant()
    def the_read_model_arithmetic_agrees(self) -> None:
        if hasattr(self, "ledger"):
            assert self.read_model == [self.ledger.posted, self.ledger.held]

    def project(self, domain_event: Any) -> None:
        """What the ledger projection does with the event's wire payload (cash_delta)."""
        wire = WIRE[type(domain_event)]
        data = json.loads(wire.payload(domain_event).model_dump_json())
        if wire.ce_type in POSTED_TYPES:
            envelope = Envelope("t", 0, 0, wire.ce_type, "s", 1, data["tenant_id"], data)
            posted, held = cash_delta(envelope)
            self.read_model[0] += posted
            self.read_model[1] += held

    @invariant()
    def the_auditor_replays_the_same_balances(self) -> None:
        if hasattr(self, "ledger"):
            report = verify([LedgerStream(self.ledger.id, self.stored)])
            [summary] = report.ledgers
            assert report.ok, report.first_problem
            assert (summary.posted, summary.held) == (self.ledger.posted, self.ledger.held)

    # Helpers

    def expect(
        self, request: Request, expected: Expected, before: int, later: bool = False
    ) -> Outcome:
        """Run a request under a new key and check it did what the model expects."""
        self.serial += 1
        key = f"key-{self.serial}"
        outcome = self.call(key, request)
        if isinstance(expected, int):
            assert isinstance(outcome, Receipt) and outcome.amount == expected, outcome
        else:
            assert outcome is expected, outcome
        self.answers[key] = (request, outcome)
        if not later:
            self.crossed(before)
        self.store()
        return outcome

    def call(self, key: str, request: Request) -> Outcome:
        command = getattr(self.ledger, request.operation)
        try:
            result: Outcome = command(key, *request.args, now=self.now, **dict(request.kwargs))
        except DomainError as refused:
            return type(refused)
        return result

    def hold_refusal(self, hold: ModelHold | None, capturing: bool) -> type[DomainError] | None:
        if hold is None:
            return NotFoundError
        if not hold.open or (capturing and self.now >= hold.expires_at):
            return HoldNotOpenError
        return None

    def crossed(self, before: int) -> None:
        """The model's rule for BalanceDepleted / BalanceRestored."""
        after, floor = self.model.available, self.model.floor
        if not self.model.depleted and after <= floor < before:
            self.model.depleted = True
        elif self.model.depleted and after > floor:
            self.model.depleted = False

    def store(self, expect_none: bool = False) -> None:
        """Store the new events as the recorder would, and read them back as the auditor does."""
        new = self.ledger.collect_events()
        assert not (expect_none and new), "a replay or a refused reuse recorded something"
        for domain_event in new:
            self.project(domain_event)
            stored = self.mapper.to_stored_event(domain_event)
            state = auditor_state(stored.state)
            self.stored.append(
                StoredLedgerEvent.from_stored(stored.originator_version, stored.topic, state)
            )


LedgerMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
test_ledger_machine = LedgerMachine.TestCase
