"""The Allocation aggregate: one tenant's rental of GPUs on a node, from request to release.

States (ARCHITECTURE section 7):

    REQUESTED -> RESERVED -> PROVISIONING -> RUNNING -> RELEASING -> RELEASED
    any state before RUNNING -> FAILED (typed reason)
    RUNNING -> FORCE_RELEASING (credit exhausted) -> RELEASED
    RELEASING / FORCE_RELEASING -> RELEASE_FAILED (the node did not confirm; retried) -> ...

Every transition names the states it may start from; anything else is an
``InvalidTransitionError`` (409 at the edge). Billing is only ever from ``started_at`` to
``released_at``: an allocation that never ran is never charged.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError, ValidationFailedError

REQUESTED, RESERVED, PROVISIONING, RUNNING = "requested", "reserved", "provisioning", "running"
RELEASING, FORCE_RELEASING, RELEASE_FAILED = "releasing", "force_releasing", "release_failed"
RELEASED, FAILED = "released", "failed"
TERMINAL = (RELEASED, FAILED)
BEFORE_RUNNING = (REQUESTED, RESERVED, PROVISIONING)
RELEASING_STATES = (RELEASING, FORCE_RELEASING, RELEASE_FAILED)
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


class Allocation(Aggregate):
    TOPIC = "gpucloud.compute.Allocation"

    class Event(Aggregate.Event):
        TOPIC = T + "Event"

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

    @classmethod
    def request(
        cls, allocation_id: UUID, tenant_id: UUID, sku_id: UUID, region: str, gpus: int,
        price_per_gpu_hour: int, name: str, request_hash: str, now: datetime,
    ) -> Allocation:  # fmt: skip
        for value, field in ((gpus, "gpus"), (price_per_gpu_hour, "price_per_gpu_hour")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationFailedError(f"{field} must be a positive integer")
        if not 1 <= len(name) <= 64:
            raise ValidationFailedError("an allocation name is 1-64 characters")
        return cls(
            allocation_id, tenant_id, sku_id, region, gpus, price_per_gpu_hour, name,
            request_hash, now,
        )  # fmt: skip

    @property
    def allowed_actions(self) -> tuple[str, ...]:
        return ACTIONS.get(self.state, ())

    def reserve(self, node_id: UUID, gpu_indices: tuple[int, ...], now: datetime) -> None:
        self._require("reserve", REQUESTED)
        self._reserved(node_id, tuple(gpu_indices), now)

    def start_provisioning(self, now: datetime) -> None:
        self._require("provision", RESERVED)
        self._provisioning(now)

    def mark_running(self, now: datetime) -> None:
        self._require("run", PROVISIONING)
        self._running(now)

    def fail(self, reason: str, detail: str, now: datetime) -> None:
        if reason not in FAILURE_REASONS:
            raise ValidationFailedError(f"failure reason must be one of {FAILURE_REASONS}")
        allowed = (*BEFORE_RUNNING, RUNNING) if reason == "instance_lost" else BEFORE_RUNNING
        self._require("fail", *allowed)
        self._failed(reason, detail, now)

    def release(self, reason: str, now: datetime) -> None:
        """The tenant's release. Idempotent while releasing; a retry after RELEASE_FAILED."""
        if self.state in (RELEASING, FORCE_RELEASING, RELEASED):
            return
        self._require("release", RUNNING, RELEASE_FAILED, *BEFORE_RUNNING)
        self._releasing(RELEASING, reason, now)

    def force_release(self, reason: str, now: datetime) -> bool:
        """Credit exhausted: only a RUNNING allocation is forced, once; True if it was."""
        if self.state != RUNNING:
            return False
        self._releasing(FORCE_RELEASING, reason, now)
        return True

    def confirm_released(self, now: datetime) -> None:
        if self.state == RELEASED:
            return
        self._require("confirm release", *RELEASING_STATES)
        self._released(now)

    def release_failed(self, error: str, now: datetime) -> None:
        self._require("record a failed release", RELEASING, FORCE_RELEASING, RELEASE_FAILED)
        self._release_failed(error, now)

    def _require(self, action: str, *states: str) -> None:
        if self.state not in states:
            raise InvalidTransitionError(f"cannot {action} an allocation that is {self.state}")

    @event("Reserved", topic=T + "Reserved")
    def _reserved(self, node_id: UUID, gpu_indices: tuple[int, ...], at: datetime) -> None:
        self.state, self.node_id, self.gpu_indices = RESERVED, node_id, tuple(gpu_indices)

    @event("ProvisioningStarted", topic=T + "ProvisioningStarted")
    def _provisioning(self, at: datetime) -> None:
        self.state = PROVISIONING

    @event("Running", topic=T + "Running")
    def _running(self, at: datetime) -> None:
        self.state, self.started_at = RUNNING, at

    @event("Failed", topic=T + "Failed")
    def _failed(self, reason: str, detail: str, at: datetime) -> None:
        self.state, self.failure = FAILED, reason
        if self.started_at is not None:
            self.released_at = at  # an instance lost while running stops billing here

    @event("ReleaseRequested", topic=T + "ReleaseRequested")
    def _releasing(self, state: str, reason: str, at: datetime) -> None:
        self.state, self.release_reason = state, reason

    @event("Released", topic=T + "Released")
    def _released(self, at: datetime) -> None:
        self.state, self.released_at = RELEASED, at

    @event("ReleaseFailed", topic=T + "ReleaseFailed")
    def _release_failed(self, error: str, at: datetime) -> None:
        self.state, self.release_attempts = RELEASE_FAILED, self.release_attempts + 1
