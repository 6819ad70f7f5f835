"""Compute context: the allocation commands, each one unit of work across the contexts it
touches (see handlers/unit_of_work.py).

- ``request`` admits an allocation: the SKU is active in the region, the tenant stays within
  its GPU quota, and a runway hold (N minutes of the price) fits its available balance. The
  hold and the new allocation commit together; the same Idempotency-Key gives the same
  allocation (the id is derived from it).
- ``place`` claims GPUs on the best-fitting candidate node; a lost race or a full node moves
  to the next; none left fails the allocation with ``no_capacity``.
- ``fail`` and ``confirm_released`` settle at once, in the same transaction: the node claim is
  released, the runway hold voided if still open, the allocation marked settled. So no crash
  can leave a failed allocation holding GPUs or credit.
- ``mark_running`` voids the runway hold in the same transaction: from there on the tenant
  pays by the window (handlers/billing.py), and the hold must not block its own debits.

Every command reads the allocation's state first and does nothing when it is already past
that step, so the saga can repeat any step after a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from domain.allocation import (
    LIVE,
    PROVISIONING,
    REQUESTED,
    RESERVED,
    TERMINAL,
    Allocation,
    SkuUnavailableError,
)
from domain.catalog import CapacityExhaustedError, Node, Sku
from domain.errors import NotFoundError, ValidationFailedError
from domain.ledger import Ledger
from domain.ledger_hash import hold_id_of, ledger_id_of
from domain.ledger_terms import OPEN, InsufficientFundsError, runway_key, runway_void_key
from domain.quota import GpuQuota
from handlers.base import ContextApplication, Written, id_for_key, request_hash, same_request
from handlers.unit_of_work import AtomicSave, Session, UnitOfWork

HOLD_MARGIN = timedelta(minutes=10)  # a runway hold outlives the provisioning deadline by this
MAX_COUNT = 64


@dataclass(frozen=True)
class Admission:
    """The admission policy a request meets unless it names its own: the GPU quota of a tenant
    with no limit of its own, and the minutes of price the runway hold covers. Given once, by
    the composition root, from settings."""

    quota_gpus: int = 16
    runway_minutes: int = 10


class Allocations(ContextApplication):
    """The compute context's application: one notification log, relayed to compute.*."""

    name = "compute"
    # KEPT_MAXSIZE: billing passes over every running allocation each minute; kept here as
    # last saved (~1 KB each), a pass reads only what others wrote since, not up to 9
    # events per allocation from its snapshot. Override with COMPUTE_KEPT_MAXSIZE.
    env = {"AGGREGATE_CACHE_MAXSIZE": "10000", "KEPT_MAXSIZE": "100000"}
    # every window billed is an event; a billing worker that restarts replays at most 9 per
    # allocation (the next minutes' passes start from what it saved)
    snapshotting_intervals = {Allocation: 10}
    admission = Admission()

    def bind(
        self,
        inventory: ContextApplication,
        ledgers: ContextApplication,
        save: AtomicSave,
        admission: Admission = Admission(),
    ) -> None:
        """Wire the other contexts a command touches and the admission policy (done by the
        composition root)."""
        self.inventory, self.ledgers, self.uow = inventory, ledgers, UnitOfWork(save)
        self.admission = admission

    def request(
        self, *, tenant_id: UUID, sku_id: UUID, region: str, count: int, name: str | None,
        key: str, now: datetime, quota_gpus: int | None = None,
        runway_minutes: int | None = None, deadline_seconds: int | None = None,
    ) -> Written:  # fmt: skip
        """Admit an allocation. ``quota_gpus`` and ``runway_minutes`` default to the bound
        `Admission`; a test or an operator's tool may name its own."""
        quota_gpus = self.admission.quota_gpus if quota_gpus is None else quota_gpus
        if runway_minutes is None:
            runway_minutes = self.admission.runway_minutes
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
            raise ValidationFailedError(f"count must be an integer from 1 to {MAX_COUNT}")
        digest = request_hash(sku_id=sku_id, region=region, count=count, name=name)
        allocation_id = id_for_key(f"allocation:{tenant_id}", key)
        existing = self.find(Allocation, allocation_id)
        if existing is not None:
            return same_request(existing, digest)
        sku = self._sku(sku_id, region)
        gpus = sku.gpus * count
        runway = -(-sku.price_per_gpu_hour * gpus * runway_minutes // 60)
        deadline = deadline_seconds or sku.provision_deadline_seconds

        def admit(session: Session) -> Written:
            if session.find(self, Allocation, allocation_id) is not None:
                raise _AlreadyAdmitted  # a concurrent request with this key won
            hold_id = self._hold(session, tenant_id, allocation_id, runway, now, deadline)
            self._quota(session, tenant_id).reserve(allocation_id, gpus, quota_gpus)  # default
            allocation = Allocation.request(
                allocation_id, tenant_id, sku.id, region, gpus, sku.price_per_gpu_hour,
                name or f"{sku.name} x{count}", digest, now, deadline, hold_id,
            )  # fmt: skip
            session.add(self, allocation)
            return Written(allocation.id, allocation.version, created=True)

        try:
            return self.uow.run(admit)
        except _AlreadyAdmitted:
            return same_request(self.get(Allocation, allocation_id), digest)

    def place(self, allocation_id: UUID, candidates: Sequence[UUID], now: datetime) -> str:
        """Claim GPUs on the first candidate that has them (candidates come best fit first)."""

        def decide(session: Session) -> str:
            allocation = session.get(self, Allocation, allocation_id)
            if allocation.state != REQUESTED:
                return allocation.state
            for node_id in candidates:
                node = session.find(self.inventory, Node, node_id)
                if node is None or node.region != allocation.region:
                    continue
                try:
                    indices = node.claim(allocation.claim_id, allocation.id, allocation.gpus)
                except CapacityExhaustedError:
                    continue
                allocation.reserve(node.id, indices, now)
                return allocation.state
            detail = f"no node in {allocation.region} has {allocation.gpus} free GPUs"
            allocation.fail("no_capacity", detail, now)
            self._settle(session, allocation, now)
            return allocation.state

        return self.uow.run(decide)

    def start_provisioning(self, allocation_id: UUID, now: datetime) -> Allocation:
        return self._step(allocation_id, RESERVED, lambda a, _: a.start_provisioning(now))

    def mark_running(self, allocation_id: UUID, now: datetime) -> Allocation:
        def run(allocation: Allocation, session: Session) -> None:
            allocation.mark_running(now)
            self._void_hold(session, allocation, now)

        return self._step(allocation_id, PROVISIONING, run)

    def fail(self, allocation_id: UUID, reason: str, detail: str, now: datetime) -> Allocation:
        def fail(allocation: Allocation, session: Session) -> None:
            allocation.fail(reason, detail, now)
            self._settle(session, allocation, now)

        return self._step(allocation_id, LIVE, fail)

    def release(
        self, allocation_id: UUID, reason: str, now: datetime, tenant_id: UUID | None = None
    ) -> Allocation:
        """The tenant's release (``tenant_id`` scopes it: another tenant's reads as missing)."""
        allocation = self._scoped(allocation_id, tenant_id)
        allocation, _ = self.update(Allocation, allocation.id, lambda a: a.release(reason, now))
        return allocation

    def force_release(self, allocation_id: UUID, reason: str, now: datetime) -> bool:
        _, forced = self.update(Allocation, allocation_id, lambda a: a.force_release(reason, now))
        return forced

    def release_failed(self, allocation_id: UUID, error: str, now: datetime) -> Allocation:
        states = ("releasing", "force_releasing", "release_failed")
        return self._step(allocation_id, states, lambda a, _: a.release_failed(error, now))

    def confirm_released(self, allocation_id: UUID, now: datetime) -> Allocation:
        def confirm(allocation: Allocation, session: Session) -> None:
            allocation.confirm_released(now)
            self._settle(session, allocation, now)

        return self._step(
            allocation_id, ("releasing", "force_releasing", "release_failed"), confirm
        )

    def settle(self, allocation_id: UUID, now: datetime) -> Allocation:
        """Give back what a terminal allocation still holds (normally done with its last
        transition; kept for allocations that ended before settlement existed)."""
        return self._step(allocation_id, TERMINAL, lambda a, s: self._settle(s, a, now))

    def allocation(self, allocation_id: UUID, tenant_id: UUID | None = None) -> Allocation:
        return self._scoped(allocation_id, tenant_id)

    # Helpers

    def _step(self, allocation_id: UUID, states: str | tuple[str, ...], change: Any) -> Allocation:
        """Apply ``change`` if the allocation is in one of ``states``; else leave it as is."""
        allowed = (states,) if isinstance(states, str) else states

        def decide(session: Session) -> Allocation:
            allocation = session.get(self, Allocation, allocation_id)
            if allocation.state in allowed and not allocation.settled:  # settled: terminal
                change(allocation, session)
            return allocation

        return self.uow.run(decide)

    def _scoped(self, allocation_id: UUID, tenant_id: UUID | None) -> Allocation:
        allocation = self.get(Allocation, allocation_id)
        if tenant_id is not None and allocation.tenant_id != tenant_id:
            raise NotFoundError(f"allocation {allocation_id} not found")
        return allocation

    def _sku(self, sku_id: UUID, region: str) -> Sku:
        sku = self.inventory.find(Sku, sku_id)
        if sku is None:
            raise ValidationFailedError(
                f"sku_id {sku_id} names no SKU: list them with GET /v1/skus"
            )
        if not sku.active:
            raise SkuUnavailableError(f"SKU {sku.name} is not offered any more")
        if region not in sku.regions:
            raise SkuUnavailableError(
                f"SKU {sku.name} is offered in {', '.join(sku.regions)}, not {region}"
            )
        return sku

    def _hold(
        self, session: Session, tenant_id: UUID, allocation_id: UUID, amount: int,
        now: datetime, deadline_seconds: int,
    ) -> str | None:  # fmt: skip
        if amount <= 0:
            return None
        ledger = session.find(self.ledgers, Ledger, ledger_id_of(tenant_id))
        if ledger is None:
            raise InsufficientFundsError("the tenant has no credit yet: top up first")
        key = runway_key(allocation_id)
        if hold_id_of(ledger.id, key) in ledger.holds:
            # Written with the allocation, in one transaction: a concurrent request with this
            # key won, though this session read the allocation before that commit.
            raise _AlreadyAdmitted
        expires = now + timedelta(seconds=deadline_seconds) + HOLD_MARGIN
        ledger.hold(key, amount, expires, now)
        return hold_id_of(ledger.id, key)

    def _void_hold(self, session: Session, allocation: Allocation, now: datetime) -> None:
        if allocation.hold_id is None:
            return
        ledger = session.get(self.ledgers, Ledger, ledger_id_of(allocation.tenant_id))
        hold = ledger.holds.get(allocation.hold_id)
        if hold is not None and hold.state == OPEN:
            ledger.void(runway_void_key(allocation.id), allocation.hold_id, now)

    def set_quota(self, tenant_id: UUID, gpus: int | None) -> GpuQuota:
        """Ops set the tenant's GPU limit (None: back to the platform's default); setting
        the same limit again records nothing. The quota as it now stands."""

        def change(session: Session) -> GpuQuota:
            quota = self._quota(session, tenant_id)
            quota.set_limit(gpus)
            return quota

        return self.uow.run(change)

    def quota(self, tenant_id: UUID) -> GpuQuota | None:
        """The tenant's quota as stored (None: it never requested a GPU nor had a limit)."""
        return self.find(GpuQuota, GpuQuota.create_id(tenant_id))

    def _quota(self, session: Session, tenant_id: UUID) -> GpuQuota:
        found = session.find(self, GpuQuota, GpuQuota.create_id(tenant_id))
        return found or session.add(self, GpuQuota(tenant_id=tenant_id))

    def _settle(self, session: Session, allocation: Allocation, now: datetime) -> None:
        quota = session.find(self, GpuQuota, GpuQuota.create_id(allocation.tenant_id))
        if quota is not None:
            quota.free(allocation.id)
        if allocation.node_id is not None:
            session.get(self.inventory, Node, allocation.node_id).release(allocation.claim_id)
        self._void_hold(session, allocation, now)
        allocation.settle(now)


class _AlreadyAdmitted(Exception):
    """The allocation was created by a concurrent request with the same key."""
