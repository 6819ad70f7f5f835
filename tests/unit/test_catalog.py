"""SKU and Node aggregates, and the Inventory application in memory: given / when / then."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate

from domain.catalog import CapacityExhaustedError, Node, NodeNotActiveError, Sku
from domain.errors import IdempotencyKeyReusedError, NotFoundError, ValidationFailedError
from handlers.inventory import Inventory

SKU: dict[str, Any] = dict(
    name="h100-1x",
    gpu_model="NVIDIA H100 80GB HBM3",
    gpus=1,
    vcpus=16,
    ram_gib=128,
    disk_gib=500,
    regions=["us-east-1", "eu-west-1"],
    price_per_gpu_hour=2_490_000,
)
NODE: dict[str, Any] = dict(region="eu-west-1", gpu_model="NVIDIA H100 80GB HBM3", gpu_count=4)


def a_sku(**changes: Any) -> Sku:
    return Sku.create(uuid4(), **{**SKU, **changes}, request_hash="h")


def a_node(**changes: Any) -> Node:
    spec: dict[str, Any] = {**NODE, "labels": {}, "driver": "local", "address": None}
    return Node.register(uuid4(), **{**spec, **changes}, request_hash="h")


def names(aggregate: Aggregate) -> list[str]:
    return [type(e).__name__ for e in aggregate.collect_events()]


def replayed(aggregate: Aggregate) -> Any:
    """The aggregate rebuilt from its events alone."""
    rebuilt = None
    for domain_event in aggregate.collect_events():
        rebuilt = domain_event.mutate(rebuilt)
    return rebuilt


# SKU


def test_creating_a_sku_records_created_and_starts_active_with_sorted_regions() -> None:
    sku = a_sku(name="  h100-1x  ")

    [created] = sku.collect_events()

    assert type(created).__name__ == "Created"
    assert created.regions == ("eu-west-1", "us-east-1")  # type: ignore[attr-defined]
    assert (sku.name, sku.active, sku.price_per_gpu_hour) == ("h100-1x", True, 2_490_000)


EVENTS = {
    Sku: ["Created", "PriceChanged", "Activated", "Deactivated"],
    Node: ["Registered", "StateChanged", "CapacityClaimed", "ClaimReleased"],
}


@pytest.mark.parametrize("aggregate", [Sku, Node])
def test_every_catalog_event_has_a_stable_type_name(aggregate: type[Aggregate]) -> None:
    prefix = f"gpucloud.inventory.{aggregate.__name__}"

    topics = [getattr(aggregate, name).TOPIC for name in EVENTS[aggregate]]

    assert getattr(aggregate, "TOPIC", None) == prefix
    assert topics == [f"{prefix}.{name}" for name in EVENTS[aggregate]]


@pytest.mark.parametrize(
    "changes",
    [
        {"name": ""},
        {"name": "x" * 65},
        {"name": "<script>"},
        {"gpu_model": ""},
        {"gpus": 0},
        {"gpus": 17},
        {"gpus": True},
        {"gpus": 1.0},
        {"vcpus": 0},
        {"ram_gib": 0},
        {"disk_gib": -1},
        {"regions": []},
        {"regions": "eu-west-1"},
        {"regions": ["EU-WEST-1"]},
        {"regions": ["eu-west"]},
        {"regions": ["eu-west-1", "eu-west-1"]},
        {"price_per_gpu_hour": 0},
        {"price_per_gpu_hour": -5},
        {"price_per_gpu_hour": 2.49},
        {"price_per_gpu_hour": True},
        {"price_per_gpu_hour": 1_000_000_001},
    ],
)
def test_a_sku_with_invalid_input_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailedError):
        a_sku(**changes)


def test_changing_the_price_records_price_changed_and_the_same_price_records_nothing() -> None:
    sku = a_sku()
    sku.collect_events()

    sku.change_price(3_000_000)
    sku.change_price(3_000_000)

    assert names(sku) == ["PriceChanged"]
    assert (sku.price_per_gpu_hour, sku.version) == (3_000_000, 2)


@pytest.mark.parametrize("price", [0, 1.5, True, "100"])
def test_a_bad_new_price_is_refused(price: Any) -> None:
    with pytest.raises(ValidationFailedError):
        a_sku().change_price(price)


def test_deactivating_and_activating_record_events_and_repeats_are_ignored() -> None:
    sku = a_sku()
    sku.collect_events()

    sku.set_active(True)
    sku.set_active(False)
    sku.set_active(False)
    sku.set_active(True)

    assert names(sku) == ["Deactivated", "Activated"]
    assert sku.active is True


def test_replaying_a_skus_events_rebuilds_the_same_state() -> None:
    sku = a_sku()
    sku.change_price(1_000_000)
    sku.set_active(False)

    rebuilt = replayed(sku)

    assert rebuilt.__dict__ == sku.__dict__


# Node registration and state


def test_registering_a_node_records_registered_and_starts_active_with_all_gpus_free() -> None:
    node = a_node(labels={"rack": "r1"}, driver="ssh", address="10.0.0.5:22")

    assert names(node) == ["Registered"]
    assert (node.state, node.free_gpus, node.claims) == ("active", (0, 1, 2, 3), {})
    assert (node.labels, node.address) == ({"rack": "r1"}, "10.0.0.5:22")


@pytest.mark.parametrize(
    "changes",
    [
        {"region": "Europe"},
        {"gpu_count": 0},
        {"gpu_count": 65},
        {"gpu_count": False},
        {"gpu_model": "  "},
        {"labels": {"Bad Key": "x"}},
        {"labels": {"rack": "x" * 129}},
        {"labels": {"rack": 1}},
        {"labels": {f"k{i}": "v" for i in range(33)}},
        {"driver": "docker"},
        {"driver": "local", "address": "10.0.0.5:22"},
        {"driver": "ssh", "address": None},
        {"driver": "ssh", "address": "10.0.0.5"},
        {"driver": "ssh", "address": "10.0.0.5:0"},
        {"driver": "ssh", "address": "10.0.0.5:70000"},
        {"driver": "ssh", "address": ":22"},
        {"driver": "ssh", "address": "bad host:22"},
    ],
)
def test_a_node_with_invalid_input_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailedError):
        a_node(**changes)


def test_an_ssh_node_accepts_a_hostname_or_an_ipv6_address() -> None:
    assert (
        a_node(driver="ssh", address="gpu-7.dc1.example:2222").address == "gpu-7.dc1.example:2222"
    )
    assert a_node(driver="ssh", address="[fe80::1]:22").address == "[fe80::1]:22"


def test_state_changes_are_recorded_and_a_repeat_is_ignored() -> None:
    node = a_node()
    node.collect_events()

    node.set_state("draining")
    node.set_state("draining")
    node.set_state("offline")
    node.set_state("active")

    events = node.collect_events()
    assert [e.state for e in events] == ["draining", "offline", "active"]  # type: ignore[attr-defined]


def test_an_unknown_state_is_refused() -> None:
    with pytest.raises(ValidationFailedError):
        a_node().set_state("broken")


# Claims


def test_a_claim_takes_the_lowest_free_gpu_indices() -> None:
    node = a_node()
    allocation = uuid4()

    first = node.claim("c1", allocation, 1)
    second = node.claim("c2", allocation, 2)

    assert (first, second, node.free_gpus) == ((0,), (1, 2), (3,))


def test_a_released_gap_is_filled_first() -> None:
    node = a_node()
    for claim_id in ("c1", "c2", "c3"):
        node.claim(claim_id, uuid4(), 1)
    node.release("c2")

    assert node.claim("c4", uuid4(), 2) == (1, 3)


def test_capacity_claimed_carries_the_claim_the_allocation_and_the_indices() -> None:
    node = a_node()
    node.collect_events()
    allocation = uuid4()

    node.claim("c1", allocation, 2)

    [claimed] = node.collect_events()
    assert type(claimed).__name__ == "CapacityClaimed"
    assert (claimed.claim_id, claimed.allocation_id, claimed.gpu_indices) == (  # type: ignore[attr-defined]
        "c1",
        allocation,
        (0, 1),
    )


def test_a_claim_for_more_gpus_than_are_free_is_exhausted() -> None:
    node = a_node()
    node.claim("c1", uuid4(), 3)

    with pytest.raises(CapacityExhaustedError):
        node.claim("c2", uuid4(), 2)
    with pytest.raises(CapacityExhaustedError):
        a_node(gpu_count=2).claim("c3", uuid4(), 4)


def test_the_same_claim_twice_is_a_no_op_returning_the_same_indices() -> None:
    node = a_node()
    allocation = uuid4()
    first = node.claim("c1", allocation, 2)
    node.collect_events()

    again = node.claim("c1", allocation, 2)

    assert again == first
    assert node.collect_events() == []


@pytest.mark.parametrize("gpus, same_allocation", [(1, True), (2, False)])
def test_a_claim_id_reused_with_another_request_is_refused(
    gpus: int, same_allocation: bool
) -> None:
    node = a_node()
    allocation = uuid4()
    node.claim("c1", allocation, 2)

    with pytest.raises(IdempotencyKeyReusedError):
        node.claim("c1", allocation if same_allocation else uuid4(), gpus)


def test_a_released_claim_id_cannot_claim_again() -> None:
    node = a_node()
    allocation = uuid4()
    node.claim("c1", allocation, 1)
    node.release("c1")

    with pytest.raises(IdempotencyKeyReusedError):
        node.claim("c1", allocation, 1)


@pytest.mark.parametrize("state", ["draining", "offline"])
def test_claims_are_refused_on_a_node_that_is_not_active(state: str) -> None:
    node = a_node()
    node.set_state(state)

    with pytest.raises(NodeNotActiveError):
        node.claim("c1", uuid4(), 1)


def test_a_draining_node_keeps_its_claims_and_still_answers_a_repeated_claim() -> None:
    node = a_node()
    allocation = uuid4()
    node.claim("c1", allocation, 1)

    node.set_state("draining")

    assert node.claim("c1", allocation, 1) == (0,)
    assert node.claims == {"c1": (0,)}


@pytest.mark.parametrize(
    "claim_id, allocation, gpus",
    [("", uuid4(), 1), ("c 1", uuid4(), 1), ("c1", "not-a-uuid", 1), ("c1", uuid4(), 0)],
)
def test_a_malformed_claim_is_refused(claim_id: str, allocation: Any, gpus: int) -> None:
    with pytest.raises(ValidationFailedError):
        a_node().claim(claim_id, allocation, gpus)


def test_releasing_frees_the_gpus_and_records_claim_released() -> None:
    node = a_node()
    allocation = uuid4()
    node.claim("c1", allocation, 2)
    node.collect_events()

    node.release("c1")

    [released] = node.collect_events()
    assert type(released).__name__ == "ClaimReleased"
    assert (released.claim_id, released.allocation_id) == ("c1", allocation)  # type: ignore[attr-defined]
    assert (node.claims, node.free_gpus) == ({}, (0, 1, 2, 3))


def test_releasing_an_unknown_or_released_claim_is_a_no_op() -> None:
    node = a_node()
    node.claim("c1", uuid4(), 1)
    node.release("c1")
    node.collect_events()

    node.release("c1")
    node.release("never-claimed")

    assert node.collect_events() == []


def test_replaying_a_nodes_events_rebuilds_the_same_state() -> None:
    node = a_node(labels={"rack": "r1"})
    node.claim("c1", uuid4(), 2)
    node.claim("c2", uuid4(), 1)
    node.release("c1")
    node.set_state("draining")

    rebuilt = replayed(node)

    assert rebuilt.__dict__ == node.__dict__
    assert rebuilt.free_gpus == (0, 1, 3)


# The Inventory application, in memory (PostgreSQL: tests/integration/test_claims.py)


@pytest.fixture
def inventory() -> Inventory:
    return Inventory(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def test_the_same_key_and_body_creates_one_sku_and_another_body_is_refused(
    inventory: Inventory,
) -> None:
    first = inventory.create_sku(**SKU, idempotency_key="k1")

    again = inventory.create_sku(**SKU, idempotency_key="k1")
    with pytest.raises(IdempotencyKeyReusedError):
        inventory.create_sku(**{**SKU, "price_per_gpu_hour": 1}, idempotency_key="k1")

    assert (again.id, again.created, first.created) == (first.id, False, True)
    stored = inventory.get_sku(first.id)
    assert (stored.name, stored.regions) == ("h100-1x", ("eu-west-1", "us-east-1"))


def test_the_same_key_and_body_registers_one_node_and_another_body_is_refused(
    inventory: Inventory,
) -> None:
    first = inventory.register_node(**NODE, labels={"a": "b"}, idempotency_key="n1")

    again = inventory.register_node(**NODE, labels={"a": "b"}, idempotency_key="n1")
    with pytest.raises(IdempotencyKeyReusedError):
        inventory.register_node(**NODE, labels={"a": "c"}, idempotency_key="n1")

    assert (again.id, again.created) == (first.id, False)


def test_commands_on_a_missing_or_wrong_aggregate_are_not_found(inventory: Inventory) -> None:
    sku = inventory.create_sku(**SKU)

    with pytest.raises(NotFoundError):
        inventory.get_node(sku.id)
    with pytest.raises(NotFoundError):
        inventory.claim(uuid4(), "c1", uuid4(), 1)
    with pytest.raises(NotFoundError):
        inventory.change_price(UUID(int=0), 5)


def test_updates_return_the_version_the_read_side_must_reach(inventory: Inventory) -> None:
    sku = inventory.create_sku(**SKU)
    node = inventory.register_node(**NODE)

    priced = inventory.change_price(sku.id, 100)
    off = inventory.set_sku_active(sku.id, False)
    drained = inventory.set_node_state(node.id, "draining")

    assert (priced.version, off.version, drained.version) == (2, 3, 2)
    assert inventory.get_sku(sku.id).active is False


def test_claims_through_the_application_are_stored_and_released(inventory: Inventory) -> None:
    node = inventory.register_node(**NODE)
    allocation = uuid4()

    claimed = inventory.claim(node.id, "c1", allocation, 3)
    repeated = inventory.claim(node.id, "c1", allocation, 3)
    released = inventory.release(node.id, "c1")

    assert claimed == repeated == (0, 1, 2)
    assert released.version == 3
    assert inventory.get_node(node.id).free_gpus == (0, 1, 2, 3)
