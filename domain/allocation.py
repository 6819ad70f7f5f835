"""The Allocation aggregate: one tenant's rental of GPUs on a node, from request to release.

States (ARCHITECTURE section 7):

    REQUESTED -> RESERVED -> PROVISIONING -> RUNNING -> RELEASING -> RELEASED
    any state before RUNNING -> FAILED (typed reason)
    RUNNING -> FORCE_RELEASING (credit exhausted) -> RELEASED
    RELEASING / FORCE_RELEASING -> RELEASE_FAILED (the node did not confirm; retried) -> ...

Every transition names the states it may start from; anything else is an
``InvalidTransitionError`` (409 at the edge).

Billing runs from ``started_at`` (RUNNING) to ``billing_ends_at``: the moment the release was
asked for (by the tenant, or forced when the credit ran out) or the instance was lost. A node
slow to confirm the release costs the platform, not the tenant; an allocation that never ran
is never charged. Each closed window is recorded once (``WindowBilled``), contiguous from the
start, so ``billed_through`` says exactly what has been charged.

``settled`` marks that what the allocation held is given back: its node claim released and its
runway hold closed. Only a FAILED or RELEASED allocation is settled.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.billing import Window, minute_floor, windows
from domain.errors import DomainError, ValidationFailedError

REQUESTED, RESERVED, PROVISIONING, RUNNING = "requested", "reserved", "provisioning", "running"
RELEASING, FORCE_RELEASING, RELEASE_FAILED = "releasing", "force_releasing", "release_failed"
RELEASED, FAILED = "released", "failed"
TERMINAL = (RELEASED, FAILED)
BEFORE_RUNNING = (REQUESTED, RESERVED, PROVISIONING)
RELEASING_STATES = (RELEASING, FORCE_RELEASING, RELEASE_FAILED)
LIVE = (*BEFORE_RUNNING, RUNNING)
"""The states an allocation can fail from (a lost instance fails a running one)."""
SAGA_STATES = (*BEFORE_RUNNING, *RELEASING_STATES)
"""The states the provisioning saga steps an allocation out of; an end (``TERMINAL``) wants
one more step until it is settled."""
FAILURE_REASONS = (
    "no_capacity",
    "provisioning_timeout",
    "provider_error",
    "insufficient_funds",
    "instance_lost",
)
ACTIONS = {
    RUNNING: ("release",),
    RELEASE_FAILED: ("release",),
    **dict.fromkeys(BEFORE_RUNNING, ("release",)),
}
T = "gpucloud.compute.Allocation."


class InvalidTransitionError(DomainError):
    """The allocation's state does not allow this."""


class SkuUnavailableError(DomainError):
    """The SKU is not offered (deactivated, or not in the region asked for)."""


class Allocation(Aggregate):
    TOPIC = "gpucloud.compute.Allocation"

    class Event(Aggregate.Event):
        TOPIC = T + "Event"

    def __deepcopy__(self, memo: dict[int, object]) -> Allocation:
        """Every value an allocation holds is immutable (ids, text, numbers, datetimes, a
        tuple of GPU indices), so a shallow copy is a deep one: the repository and the
        billing pass copy allocations by the hundred thousand."""
        clone = copy.copy(self)
        clone._pending_events = list(self._pending_events)
        return clone

    @event("Requested", topic=T + "Requested")
    def __init__(
        self,
        id: UUID,
        tenant_id: UUID,
        sku_id: UUID,
        region: str,
        gpus: int,
        price_per_gpu_hour: int,
        name: str,
        request_hash: str,
        at: datetime,
        deadline_seconds: int,
        hold_id: str | None,
    ) -> None:
        self.tenant_id, self.sku_id, self.region, self.gpus = tenant_id, sku_id, region, gpus
        self.price_per_gpu_hour, self.name, self.request_hash = (
            price_per_gpu_hour,
            name,
            request_hash,
        )
        self.state, self.requested_at = REQUESTED, at
        self.node_id: UUID | None = None
        self.gpu_indices: tuple[int, ...] = ()
        self.started_at: datetime | None = None
        self.released_at: datetime | None = None
        self.failure: str | None = None
        self.release_reason: str | None = None
        self.release_attempts = 0
        self.deadline = at + timedelta(seconds=deadline_seconds)
        self.hold_id = hold_id
        self.billing_ends_at: datetime | None = None
        self.billed_through: datetime | None = None
        self.cost = 0
        self.settled = False
        self.detail: str | None = None

    @classmethod
    def request(
        cls, allocation_id: UUID, tenant_id: UUID, sku_id: UUID, region: str, gpus: int,
        price_per_gpu_hour: int, name: str, request_hash: str, now: datetime,
        deadline_seconds: int = 600, hold_id: str | None = None,
    ) -> Allocation:  # fmt: skip
        for value, field in (
            (gpus, "gpus"), (price_per_gpu_hour, "price_per_gpu_hour"),
            (deadline_seconds, "deadline_seconds"),
        ):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationFailedError(f"{field} must be a positive integer")
        if not 1 <= len(name) <= 64:
            raise ValidationFailedError("an allocation name is 1-64 characters")
        return cls(
            allocation_id, tenant_id, sku_id, region, gpus, price_per_gpu_hour, name,
            request_hash, now, deadline_seconds, hold_id,
        )  # fmt: skip

    @property
    def allowed_actions(self) -> tuple[str, ...]:
        return ACTIONS.get(self.state, ())

    @property
    def claim_id(self) -> str:
        """The node claim of this allocation: one per allocation, never reused."""
        return f"allocation:{self.id}"

    @property
    def wants_saga(self) -> bool:
        """The provisioning saga has a step to take: placing, starting, provisioning,
        releasing, or settling an end."""
        return self.state in SAGA_STATES or (self.state in TERMINAL and not self.settled)

    def past_deadline(self, now: datetime) -> bool:
        """Still not running when the SKU's provisioning deadline has passed."""
        return self.state in BEFORE_RUNNING and now >= self.deadline

    def due_windows(self, now: datetime) -> list[Window]:
        """The closed windows not billed yet: whole minutes up to ``now``, and the last partial
        one once billing has ended."""
        if self.started_at is None:
            return []
        end = min(self.billing_ends_at, now) if self.billing_ends_at else minute_floor(now)
        since = self.billed_through or self.started_at
        if end <= since:
            return []
        return windows(self.started_at, end, self.price_per_gpu_hour, self.gpus, since)

    def bill(self, window: Window, taken: int, posting_key: str | None, now: datetime) -> None:
        """Record one window's charge: ``taken`` is what the ledger could debit of its amount.
        Windows are recorded in order, each starting where the last one ended."""
        expected = self.billed_through or self.started_at
        if expected is None or window.start.replace(microsecond=0) != expected.replace(
            microsecond=0
        ):
            raise InvalidTransitionError(f"window {window.start} is not the next to bill")
        if not 0 <= taken <= window.amount:
            raise ValidationFailedError("taken must be between 0 and the window's amount")
        w = window
        self._window_billed(
            self.tenant_id, w.start, w.end, w.seconds, w.amount, taken, posting_key, now
        )

    def settle(self, now: datetime) -> bool:
        """Claim and hold given back; True the first time."""
        if self.settled:
            return False
        self._require("settle", *TERMINAL)
        self._settled(self.tenant_id, now)
        return True

    def reserve(self, node_id: UUID, gpu_indices: tuple[int, ...], now: datetime) -> None:
        self._require("reserve", REQUESTED)
        self._reserved(self.tenant_id, node_id, tuple(gpu_indices), now)

    def start_provisioning(self, now: datetime) -> None:
        self._require("provision", RESERVED)
        self._provisioning(self.tenant_id, now)

    def mark_running(self, now: datetime) -> None:
        self._require("run", PROVISIONING)
        self._running(self.tenant_id, now)

    def fail(self, reason: str, detail: str, now: datetime) -> None:
        if reason not in FAILURE_REASONS:
            raise ValidationFailedError(f"failure reason must be one of {FAILURE_REASONS}")
        allowed = (*BEFORE_RUNNING, RUNNING) if reason == "instance_lost" else BEFORE_RUNNING
        self._require("fail", *allowed)
        self._failed(self.tenant_id, reason, detail, now)

    def release(self, reason: str, now: datetime) -> None:
        """The tenant's release. Idempotent while releasing; a retry after RELEASE_FAILED; a
        released or failed allocation has nothing left to release (InvalidTransitionError)."""
        if self.state in (RELEASING, FORCE_RELEASING):
            return
        self._require("release", RUNNING, RELEASE_FAILED, *BEFORE_RUNNING)
        self._releasing(self.tenant_id, RELEASING, reason, now)

    def force_release(self, reason: str, now: datetime) -> bool:
        """Credit exhausted: only a RUNNING allocation is forced, once; True if it was."""
        if self.state != RUNNING:
            return False
        self._releasing(self.tenant_id, FORCE_RELEASING, reason, now)
        return True

    def confirm_released(self, now: datetime) -> None:
        if self.state == RELEASED:
            return
        self._require("confirm release", *RELEASING_STATES)
        self._released(self.tenant_id, now)

    def release_failed(self, error: str, now: datetime) -> None:
        self._require("record a failed release", RELEASING, FORCE_RELEASING, RELEASE_FAILED)
        self._release_failed(self.tenant_id, error, now)

    def _require(self, action: str, *states: str) -> None:
        if self.state not in states:
            raise InvalidTransitionError(f"cannot {action} an allocation that is {self.state}")

    @event("Reserved", topic=T + "Reserved")
    def _reserved(
        self, tenant_id: UUID, node_id: UUID, gpu_indices: tuple[int, ...], at: datetime
    ) -> None:
        self.state, self.node_id, self.gpu_indices = RESERVED, node_id, tuple(gpu_indices)

    @event("ProvisioningStarted", topic=T + "ProvisioningStarted")
    def _provisioning(self, tenant_id: UUID, at: datetime) -> None:
        self.state = PROVISIONING

    @event("Running", topic=T + "Running")
    def _running(self, tenant_id: UUID, at: datetime) -> None:
        self.state, self.started_at = RUNNING, at

    @event("Failed", topic=T + "Failed")
    def _failed(self, tenant_id: UUID, reason: str, detail: str, at: datetime) -> None:
        self.state, self.failure, self.detail = FAILED, reason, detail
        if self.started_at is not None:
            self.released_at = at  # an instance lost while running stops billing here
            self.billing_ends_at = self.billing_ends_at or at

    @event("ReleaseRequested", topic=T + "ReleaseRequested")
    def _releasing(self, tenant_id: UUID, state: str, reason: str, at: datetime) -> None:
        self.state, self.release_reason = state, reason
        if self.started_at is not None and self.billing_ends_at is None:
            self.billing_ends_at = at

    @event("Released", topic=T + "Released")
    def _released(self, tenant_id: UUID, at: datetime) -> None:
        self.state, self.released_at = RELEASED, at

    @event("ReleaseFailed", topic=T + "ReleaseFailed")
    def _release_failed(self, tenant_id: UUID, error: str, at: datetime) -> None:
        self.state, self.release_attempts = RELEASE_FAILED, self.release_attempts + 1
        self.detail = error

    @event("WindowBilled", topic=T + "WindowBilled")
    def _window_billed(
        self, tenant_id: UUID, start: datetime, end: datetime, seconds: int, amount: int,
        taken: int, posting_key: str | None, at: datetime,
    ) -> None:  # fmt: skip
        self.billed_through, self.cost = end, self.cost + taken

    @event("Settled", topic=T + "Settled")
    def _settled(self, tenant_id: UUID, at: datetime) -> None:
        self.settled = True
