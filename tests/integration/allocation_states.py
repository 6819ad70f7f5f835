"""Allocation aggregates in every state, built from the domain's own methods, for the tests of
the allocation read models and of the process managers' inbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from domain.allocation import Allocation

NOW = datetime(2026, 11, 28, 12, 0, 30, 250_000, tzinfo=UTC)  # the aggregates' own instants
END = NOW + timedelta(minutes=2, seconds=5)


def requested(tenant: UUID | None = None, gpus: int = 2) -> Allocation:
    return Allocation.request(
        uuid4(), tenant or uuid4(), uuid4(), "eu-west-1", gpus, 2_000_000, "job", "h", NOW,
        deadline_seconds=300, hold_id="hold-1",
    )  # fmt: skip


def running(tenant: UUID | None = None) -> Allocation:
    allocation = requested(tenant)
    allocation.reserve(uuid4(), (0, 1), NOW)
    allocation.start_provisioning(NOW)
    allocation.mark_running(NOW + timedelta(seconds=10))
    return allocation


def bill(allocation: Allocation, until: datetime) -> None:
    for window in allocation.due_windows(until):
        allocation.bill(window, window.amount - 1, f"usage:{window.start.isoformat()}", until)


def released(tenant: UUID | None = None) -> Allocation:
    """Ran, asked to stop, billed to the end, one failed release, then released and settled."""
    allocation = running(tenant)
    allocation.release("tenant asked", END)
    bill(allocation, END)
    allocation.release_failed("node did not answer", END)
    allocation.release("retry", END)
    allocation.confirm_released(END + timedelta(seconds=3))
    allocation.settle(END + timedelta(seconds=3))
    return allocation
