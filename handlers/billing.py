"""Usage billing: each closed window of each running allocation debited exactly once.

One pass takes a batch of allocations and, in ONE transaction, records on each allocation the
windows it owes (``WindowBilled``, which moves ``billed_through``) and on each tenant's ledger
the matching postings. Window keys (``usage:<allocation>:<window start>``) are ledger
idempotency keys as well, so even a replayed decision could not charge a window twice; the
transaction is what keeps ``billed_through`` and the ledger from ever disagreeing.

Every posting is a ``debit_up_to``: a window takes at most what is available above the floor.
A window that falls short force-releases its allocation at once (the ``BalanceDepleted``
policy then catches the tenant's other allocations). A worker that was down catches up: the
next pass bills every missed window, at most ``MAX_WINDOWS`` per allocation per pass so that
one transaction stays small; the pass after continues.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from domain.allocation import RUNNING, Allocation
from domain.billing import Window
from domain.ledger import Ledger
from domain.ledger_hash import ledger_id_of
from handlers.allocations import Allocations
from handlers.unit_of_work import Session

MAX_WINDOWS = 60  # per allocation per pass: an hour of catch-up
FORCE_REASON = "credit exhausted"


@dataclass
class BillingPass:
    """What one pass did."""

    allocations: int = 0
    windows: int = 0
    debited: int = 0  # micro-dollars taken
    short: int = 0  # micro-dollars owed that the ledger could not take
    forced: list[UUID] = field(default_factory=list)

    def add(self, other: BillingPass) -> None:
        """Count another batch's pass into this one."""
        self.allocations += other.allocations
        self.windows += other.windows
        self.debited += other.debited
        self.short += other.short
        self.forced.extend(other.forced)


def window_key(allocation_id: UUID, window: Window) -> str:
    return f"usage:{allocation_id}:{window.start:%Y%m%dT%H%M%SZ}"


def bill(allocations: Allocations, allocation_ids: Sequence[UUID], now: datetime) -> BillingPass:
    """Bill every due window of ``allocation_ids`` up to ``now`` in one transaction."""

    def decide(session: Session) -> BillingPass:
        done = BillingPass()
        session.preload(allocations, Allocation, allocation_ids)
        found = [session.find(allocations, Allocation, i) for i in allocation_ids]
        billed = [a for a in found if a is not None]
        tenants = dict.fromkeys(ledger_id_of(a.tenant_id) for a in billed)
        session.preload(allocations.ledgers, Ledger, list(tenants))  # one or two queries
        for allocation in billed:
            _bill_one(allocations, session, allocation, now, done)
        return done

    return allocations.uow.run(decide)


def _bill_one(
    allocations: Allocations,
    session: Session,
    allocation: Allocation,
    now: datetime,
    done: BillingPass,
) -> None:
    due = allocation.due_windows(now)[:MAX_WINDOWS]
    if not due:
        return
    ledger = session.find(allocations.ledgers, Ledger, ledger_id_of(allocation.tenant_id))
    done.allocations += 1
    for window in due:
        key = window_key(allocation.id, window)
        taken = _debit(ledger, key, window.amount, now)
        allocation.bill(window, taken, key if window.amount else None, now)
        done.windows, done.debited = done.windows + 1, done.debited + taken
        done.short += window.amount - taken
        if taken < window.amount and allocation.state == RUNNING:
            allocation.force_release(FORCE_REASON, now)
            done.forced.append(allocation.id)


def _debit(ledger: Ledger | None, key: str, amount: int, now: datetime) -> int:
    """What the ledger takes of ``amount`` (nothing without a ledger or for a free window)."""
    if amount == 0 or ledger is None:
        return 0
    return ledger.charge_usage(key, amount, now).amount
