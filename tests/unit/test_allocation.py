"""The Allocation lifecycle, given / when / then: each transition from where it may start."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.allocation import (
    FAILED,
    FORCE_RELEASING,
    RELEASE_FAILED,
    RELEASED,
    RELEASING,
    RUNNING,
    SAGA_STATES,
    TERMINAL,
    Allocation,
    InvalidTransitionError,
)
from domain.errors import ValidationFailedError
from handlers.provisioning import STEPS

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def requested() -> Allocation:
    return Allocation.request(uuid4(), uuid4(), uuid4(), "eu-west-1", 2, 2_000_000, "job", "h", NOW)


def running() -> Allocation:
    allocation = requested()
    allocation.reserve(uuid4(), (0, 1), NOW)
    allocation.start_provisioning(NOW)
    allocation.mark_running(NOW + timedelta(seconds=30))
    return allocation


def test_the_happy_path_runs_then_releases_with_its_times() -> None:
    allocation = running()
    allocation.release("tenant asked", NOW + timedelta(minutes=5))
    allocation.confirm_released(NOW + timedelta(minutes=5, seconds=3))

    assert allocation.state == RELEASED
    assert allocation.started_at == NOW + timedelta(seconds=30)
    assert allocation.released_at == NOW + timedelta(minutes=5, seconds=3)
    names = [type(e).__name__ for e in allocation.collect_events()]
    assert names == [
        "Requested", "Reserved", "ProvisioningStarted", "Running", "ReleaseRequested", "Released",
    ]  # fmt: skip


def test_running_allocations_offer_release_and_released_ones_nothing() -> None:
    allocation = running()
    assert allocation.allowed_actions == ("release",)
    allocation.release("done", NOW)
    allocation.confirm_released(NOW)
    assert allocation.allowed_actions == ()


@pytest.mark.parametrize(
    "step",
    [
        lambda a: a.start_provisioning(NOW),  # not reserved yet
        lambda a: a.mark_running(NOW),
        lambda a: a.confirm_released(NOW),
        lambda a: a.release_failed("boom", NOW),
    ],
)
def test_a_transition_from_the_wrong_state_is_refused(step: object) -> None:
    with pytest.raises(InvalidTransitionError):
        step(requested())  # type: ignore[operator]


def test_a_failure_before_running_carries_its_typed_reason_and_no_billing_time() -> None:
    allocation = requested()
    allocation.fail("no_capacity", "no node in eu-west-1", NOW)
    assert (allocation.state, allocation.failure) == (FAILED, "no_capacity")
    assert allocation.started_at is None and allocation.released_at is None
    with pytest.raises(InvalidTransitionError):
        allocation.release("too late", NOW)


def test_only_a_lost_instance_fails_a_running_allocation_and_stops_its_billing() -> None:
    allocation = running()
    with pytest.raises(InvalidTransitionError):
        allocation.fail("provider_error", "x", NOW)
    allocation.fail("instance_lost", "gone", NOW + timedelta(minutes=1))
    assert allocation.released_at == NOW + timedelta(minutes=1)


def test_unknown_failure_reasons_and_bad_requests_are_refused() -> None:
    with pytest.raises(ValidationFailedError):
        requested().fail("bad luck", "", NOW)
    with pytest.raises(ValidationFailedError):
        Allocation.request(uuid4(), uuid4(), uuid4(), "eu-west-1", 0, 1, "job", "h", NOW)
    with pytest.raises(ValidationFailedError):
        Allocation.request(uuid4(), uuid4(), uuid4(), "eu-west-1", 1, 1.5, "job", "h", NOW)  # type: ignore[arg-type]


def test_force_release_happens_once_and_only_to_running_allocations() -> None:
    allocation = running()
    assert allocation.force_release("credit exhausted", NOW)
    assert not allocation.force_release("credit exhausted", NOW)
    assert allocation.state == FORCE_RELEASING
    assert not requested().force_release("credit exhausted", NOW)


def test_a_release_the_node_did_not_confirm_stays_visible_and_can_be_retried() -> None:
    allocation = running()
    allocation.release("done", NOW)
    allocation.release("done again", NOW)  # idempotent while releasing
    allocation.release_failed("ssh timeout", NOW)
    assert (allocation.state, allocation.release_attempts) == (RELEASE_FAILED, 1)
    assert allocation.allowed_actions == ("release",)
    allocation.release("retry", NOW)
    assert allocation.state == RELEASING
    allocation.confirm_released(NOW)
    allocation.confirm_released(NOW)  # idempotent
    assert allocation.state == RELEASED


def test_replaying_the_events_rebuilds_the_same_allocation() -> None:
    allocation = running()
    events = allocation.collect_events()
    copy = None
    for e in events:
        copy = e.mutate(copy)
    assert copy is not None
    assert (copy.state, copy.gpu_indices, copy.started_at) == (
        RUNNING, (0, 1), allocation.started_at,
    )  # fmt: skip


@given(
    start=st.integers(0, 86_400),
    length=st.integers(1, 3 * 3600),
    price=st.integers(1, 50_000_000),
    gpus=st.integers(1, 16),
    passes=st.lists(st.integers(0, 4 * 3600), max_size=12),
)
def test_billing_passes_at_any_instants_charge_the_rounded_price_of_the_run_once(
    start: int, length: int, price: int, gpus: int, passes: list[int]
) -> None:
    """Whenever the worker runs (and however late), the windows billed add up to
    round(price x GPUs x seconds / 3600) within a micro-dollar, and none is billed twice."""
    began, ended = NOW + timedelta(seconds=start), NOW + timedelta(seconds=start + length)
    allocation = Allocation.request(
        uuid4(), uuid4(), uuid4(), "eu-west-1", gpus, price, "p", "h", NOW
    )
    allocation.reserve(uuid4(), tuple(range(gpus)), NOW)
    allocation.start_provisioning(NOW)
    allocation.mark_running(began)
    moments = sorted(began + timedelta(seconds=p) for p in passes)
    for moment in [m for m in moments if m < ended]:
        _bill_all(allocation, moment)
    allocation.release("done", ended)
    for moment in [ended, ended + timedelta(hours=1), *moments]:
        _bill_all(allocation, max(moment, ended))
    assert allocation.due_windows(ended + timedelta(days=1)) == []  # nothing left to bill
    assert abs(allocation.cost - round(price * gpus * length / 3600)) <= 1
    billed = [e for e in allocation.collect_events() if type(e).__name__ == "WindowBilled"]
    starts = [getattr(e, "start") for e in billed]  # noqa: B009 - events are typed loosely
    assert len(starts) == len(set(starts))


def _bill_all(allocation: Allocation, now: datetime) -> None:
    for window in allocation.due_windows(now):
        allocation.bill(window, window.amount, "k", now)


def test_a_copy_shares_only_immutable_values_and_diverges_from_its_original() -> None:
    """``Allocation.__deepcopy__`` is a shallow copy: sound only while every value the
    aggregate holds is immutable. A new mutable attribute must fail here first."""
    allocation = running()
    allocation.collect_events()
    clone = copy.deepcopy(allocation)

    for name, value in vars(allocation).items():
        if name != "_pending_events":
            hash(value)  # lists, dicts and sets are unhashable: they would be shared
    clone.release("user", NOW + timedelta(minutes=5))
    assert allocation.state == RUNNING and allocation.pending_events == []
    assert clone.state != RUNNING and len(clone.pending_events) == 1


def test_the_saga_wants_a_step_until_the_allocation_runs_or_is_settled() -> None:
    allocation = requested()
    wanted = [allocation.wants_saga]
    allocation.reserve(uuid4(), (0,), NOW)
    allocation.start_provisioning(NOW)
    wanted.append(allocation.wants_saga)
    allocation.mark_running(NOW)
    wanted.append(allocation.wants_saga)
    allocation.release("done", NOW)
    wanted.append(allocation.wants_saga)
    allocation.confirm_released(NOW)
    wanted.append(allocation.wants_saga)  # released, not settled yet: one more step
    allocation.settle(NOW)
    wanted.append(allocation.wants_saga)
    assert wanted == [True, True, False, True, True, False]


def test_the_saga_has_a_step_for_every_state_that_wants_one() -> None:
    assert set(STEPS) == {*SAGA_STATES, *TERMINAL}
    assert RUNNING not in STEPS
