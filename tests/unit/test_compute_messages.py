"""Every Allocation event, taken from a real aggregate driven through its lifecycles, maps to a
valid payload of its wire model, named by its allocation and tenant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, get_args
from uuid import uuid4

import pytest

from domain.allocation import FAILURE_REASONS, Allocation
from domain.quota import GpuQuota
from infra.messages import BY_CE_TYPE, WIRE
from infra.messages.compute import (
    ALLOCATION_TOPIC,
    ALLOCATION_WIRE,
    QUOTA_TOPIC,
    QUOTA_WIRE,
    FailureReason,
)

NOW = datetime(2026, 11, 28, 12, 0, 30, 250_000, tzinfo=UTC)


def requested() -> Allocation:
    return Allocation.request(
        uuid4(), uuid4(), uuid4(), "eu-west-1", 2, 2_000_000, "job", "secret-hash", NOW,
        deadline_seconds=300, hold_id="hold-1",
    )  # fmt: skip


def running() -> Allocation:
    allocation = requested()
    allocation.reserve(uuid4(), (0, 1), NOW)
    allocation.start_provisioning(NOW)
    allocation.mark_running(NOW + timedelta(seconds=10))
    return allocation


def released_after_a_failed_release() -> Allocation:
    allocation = running()
    end = NOW + timedelta(minutes=2, seconds=5)
    allocation.release("tenant asked", end)
    for window in allocation.due_windows(end):
        allocation.bill(window, window.amount, f"usage:{window.start.isoformat()}", end)
    allocation.release_failed("node did not answer", end)
    allocation.release("retry", end)
    allocation.confirm_released(end + timedelta(seconds=3))
    allocation.settle(end + timedelta(seconds=3))
    return allocation


def failed() -> Allocation:
    allocation = requested()
    allocation.fail("no_capacity", "no node has 2 free GPUs", NOW)
    allocation.settle(NOW)
    return allocation


def forced() -> Allocation:
    allocation = running()
    allocation.force_release("credit exhausted", NOW + timedelta(minutes=1))
    return allocation


def lifecycle_events() -> list[tuple[Allocation, Any]]:
    allocations = [released_after_a_failed_release(), failed(), forced()]
    return [(a, e) for a in allocations for e in a.collect_events()]


EVENTS = lifecycle_events()


def test_the_lifecycles_cover_every_allocation_event() -> None:
    assert {type(e) for _, e in EVENTS} == set(ALLOCATION_WIRE)


@pytest.mark.parametrize(("allocation", "event"), EVENTS, ids=lambda v: type(v).__name__)
def test_each_event_maps_to_a_valid_payload_of_its_model(
    allocation: Allocation, event: Any
) -> None:
    wire = ALLOCATION_WIRE[type(event)]
    payload = wire.payload(event)

    assert isinstance(payload, wire.model)
    assert wire.model.model_validate_json(payload.model_dump_json()) == payload
    data: Any = payload
    assert (data.allocation_id, data.tenant_id) == (allocation.id, allocation.tenant_id)
    assert data.at == event.at
    assert wire.tenant_of(event) == allocation.tenant_id
    assert "request_hash" not in payload.model_dump()


def test_wire_types_are_allocation_events_on_the_compute_topic() -> None:
    names = {w.ce_type for w in ALLOCATION_WIRE.values()}
    steps = (
        "requested", "reserved", "provisioning_started", "running", "failed",
        "release_requested", "released", "release_failed", "window_billed", "settled",
    )  # fmt: skip
    assert names == {f"cloud.gpu.allocation.{s}.v1" for s in steps}
    assert {w.kafka_topic for w in ALLOCATION_WIRE.values()} == {ALLOCATION_TOPIC}
    assert all(WIRE[t] is w and BY_CE_TYPE[w.ce_type] is w for t, w in ALLOCATION_WIRE.items())


def test_requested_and_billed_payloads_carry_their_terms() -> None:
    by_type = {type(e).__name__: ALLOCATION_WIRE[type(e)].payload(e) for _, e in EVENTS}
    request = by_type["Requested"].model_dump()
    assert (request["gpus"], request["price_per_gpu_hour"]) == (2, 2_000_000)
    assert (request["deadline_seconds"], request["hold_id"]) == (300, "hold-1")
    billed = by_type["WindowBilled"].model_dump()
    assert billed["taken"] == billed["amount"] > 0 and 0 < billed["seconds"] <= 60
    assert by_type["Reserved"].model_dump()["gpu_indices"] == [0, 1]


def test_failure_reasons_on_the_wire_are_the_domains() -> None:
    assert get_args(FailureReason) == FAILURE_REASONS


def test_quota_events_carry_the_tenant_and_the_allocation() -> None:
    tenant, allocation = uuid4(), uuid4()
    quota = GpuQuota(tenant_id=tenant)
    quota.reserve(allocation, 2, default_limit=4)
    quota.reserve(allocation, 2, default_limit=4)  # again: nothing new
    quota.free(allocation)
    quota.set_limit(8)
    quota.set_limit(None)
    events = quota.collect_events()
    payloads = [QUOTA_WIRE[type(e)].payload(e).model_dump() for e in events]
    assert [QUOTA_WIRE[type(e)].ce_type for e in events] == [
        "cloud.gpu.quota.opened.v1", "cloud.gpu.quota.reserved.v1", "cloud.gpu.quota.freed.v1",
        "cloud.gpu.quota.limit_set.v1", "cloud.gpu.quota.limit_set.v1",
    ]  # fmt: skip
    assert all(p["tenant_id"] == tenant and p["quota_id"] == quota.id for p in payloads)
    assert [(p["allocation_id"], p["gpus"]) for p in payloads[1:3]] == [(allocation, 2)] * 2
    assert [p["gpus"] for p in payloads[3:]] == [8, None]
    assert {w.kafka_topic for w in QUOTA_WIRE.values()} == {QUOTA_TOPIC}
