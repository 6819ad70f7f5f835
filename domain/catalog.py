"""The catalog: SKUs (what tenants rent) and Nodes (the machines whose GPUs they get).

Rules that hold for both aggregates:

- A change to the value already held (same price, same state, activating an active SKU) is
  ignored: no event, the same version. Commands are idempotent that way, like PUT.
- Integers must be real ``int``s: ``True`` and ``1.0`` are refused, not coerced.

A Node's capacity is a set of claims, claim id -> GPU indices. A claim takes the lowest free
indices; the same claim id with the same request returns the same indices without a new event;
a claim id is good for one claim only, so once released it cannot claim again (a redelivered
claim after its compensation must not grab GPUs back). Concurrency is the store's business: a
claim is decided against the loaded version, and the save fails if another writer got there
first (see handlers/inventory.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError, IdempotencyKeyReusedError, ValidationFailedError

MAX_SKU_GPUS = 16
MAX_NODE_GPUS = 64
MAX_PRICE = 1_000_000_000  # micro-dollars per GPU-hour: $1,000
DEFAULT_PROVISION_DEADLINE = 600  # seconds from request to running, unless the SKU says
MAX_LABELS = 32
NODE_STATES = ("active", "draining", "offline")
DRIVERS = ("local", "ssh")

_NAME = re.compile(r"^[A-Za-z0-9][\w .+()/-]{0,63}$", re.ASCII)
_REGION = re.compile(r"^[a-z]{2,}(-[a-z]+)+-[0-9]{1,2}$", re.ASCII)
_LABEL_KEY = re.compile(r"^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$", re.ASCII)
_LABEL_VALUE = re.compile(r"^[\w.:/ -]{0,128}$", re.ASCII)
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$")
_CLAIM_ID = re.compile(r"^[\w.:-]{1,128}$", re.ASCII)


class CapacityExhaustedError(DomainError):
    """The node cannot give the GPUs a claim asks for; the caller tries another node."""


class NodeNotActiveError(CapacityExhaustedError):
    """The node is draining or offline and takes no new claims."""


def check_int(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationFailedError(f"{field} must be an integer from {low} to {high}")
    return value


def check_name(value: object, field: str) -> str:
    """Names and GPU models: 1-64 ASCII letters, digits, spaces or _.+()/- ; trimmed."""
    cleaned = value.strip() if isinstance(value, str) else ""
    if not _NAME.match(cleaned):
        raise ValidationFailedError(f"{field} must be 1-64 letters, digits, spaces or _.+()/-")
    return cleaned


def check_price(value: object) -> int:
    return check_int(value, "price_per_gpu_hour (micro-dollars)", 1, MAX_PRICE)


def check_regions(regions: object) -> tuple[str, ...]:
    """One or more distinct region codes like ``eu-west-1``, kept sorted."""
    codes = tuple(regions) if isinstance(regions, list | tuple) else ()
    if not codes or not all(isinstance(c, str) and _REGION.match(c) for c in codes):
        raise ValidationFailedError("regions must be one or more codes like eu-west-1")
    if len(set(codes)) != len(codes):
        raise ValidationFailedError("regions must not repeat")
    return tuple(sorted(str(c) for c in codes))


def check_labels(labels: object) -> dict[str, str]:
    if not isinstance(labels, Mapping) or len(labels) > MAX_LABELS:
        raise ValidationFailedError(f"labels must be a mapping of at most {MAX_LABELS} entries")
    for key, value in labels.items():
        if not (isinstance(key, str) and _LABEL_KEY.match(key)):
            raise ValidationFailedError(f"label key {key!r} must be 1-63 of a-z 0-9 . _ / -")
        if not (isinstance(value, str) and _LABEL_VALUE.match(value)):
            raise ValidationFailedError(f"label {key!r} value must be 0-128 plain characters")
    return {str(k): str(v) for k, v in sorted(labels.items(), key=lambda kv: str(kv[0]))}


def check_endpoint(driver: object, address: object) -> tuple[str, str | None]:
    """``ssh`` nodes need a ``host:port`` address; ``local`` nodes (this machine) have none."""
    if driver not in DRIVERS:
        raise ValidationFailedError(f"driver must be one of {', '.join(DRIVERS)}")
    if driver == "local":
        if address is not None:
            raise ValidationFailedError("a local node has no address")
        return "local", None
    host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    if not _HOST.match(host) or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValidationFailedError("an ssh node needs an address host:port")
    return "ssh", f"{host}:{int(port)}"


def check_claim_id(value: object) -> str:
    if not (isinstance(value, str) and _CLAIM_ID.match(value)):
        raise ValidationFailedError("claim_id must be 1-128 of letters, digits and _.:-")
    return value


class Sku(Aggregate):
    """A rentable shape: ``gpus`` GPUs of one model plus CPU, RAM and disk, priced per GPU-hour.

    A new SKU is active. Prices are integer micro-dollars per GPU-hour.
    """

    TOPIC = "gpucloud.inventory.Sku"

    class Event(Aggregate.Event):
        TOPIC = "gpucloud.inventory.Sku.Event"

    @event("Created", topic="gpucloud.inventory.Sku.Created")
    def __init__(
        self,
        id: UUID,
        name: str,
        gpu_model: str,
        gpus: int,
        vcpus: int,
        ram_gib: int,
        disk_gib: int,
        regions: tuple[str, ...],
        price_per_gpu_hour: int,
        request_hash: str,
        provision_deadline_seconds: int = DEFAULT_PROVISION_DEADLINE,
    ) -> None:
        self.name = name
        self.gpu_model = gpu_model
        self.gpus = gpus
        self.vcpus = vcpus
        self.ram_gib = ram_gib
        self.disk_gib = disk_gib
        self.regions = tuple(regions)
        self.price_per_gpu_hour = price_per_gpu_hour
        self.request_hash = request_hash
        self.provision_deadline_seconds = provision_deadline_seconds
        self.active = True

    @classmethod
    def create(
        cls,
        sku_id: UUID,
        *,
        name: str,
        gpu_model: str,
        gpus: int,
        vcpus: int,
        ram_gib: int,
        disk_gib: int,
        regions: Iterable[str],
        price_per_gpu_hour: int,
        request_hash: str,
        provision_deadline_seconds: int = DEFAULT_PROVISION_DEADLINE,
    ) -> Sku:
        return cls(
            id=sku_id,
            name=check_name(name, "name"),
            gpu_model=check_name(gpu_model, "gpu_model"),
            gpus=check_int(gpus, "gpus", 1, MAX_SKU_GPUS),
            vcpus=check_int(vcpus, "vcpus", 1, 1024),
            ram_gib=check_int(ram_gib, "ram_gib", 1, 65536),
            disk_gib=check_int(disk_gib, "disk_gib", 0, 1_048_576),
            regions=check_regions(regions),
            price_per_gpu_hour=check_price(price_per_gpu_hour),
            request_hash=request_hash,
            provision_deadline_seconds=check_int(
                provision_deadline_seconds, "provision_deadline_seconds", 10, 86_400
            ),
        )

    def change_price(self, price_per_gpu_hour: int) -> None:
        price = check_price(price_per_gpu_hour)
        if price != self.price_per_gpu_hour:
            self._price_changed(price_per_gpu_hour=price)

    def set_active(self, active: bool) -> None:
        if not isinstance(active, bool):
            raise ValidationFailedError("active must be true or false")
        if active and not self.active:
            self._activated()
        elif not active and self.active:
            self._deactivated()

    @event("PriceChanged", topic="gpucloud.inventory.Sku.PriceChanged")
    def _price_changed(self, price_per_gpu_hour: int) -> None:
        self.price_per_gpu_hour = price_per_gpu_hour

    @event("Activated", topic="gpucloud.inventory.Sku.Activated")
    def _activated(self) -> None:
        self.active = True

    @event("Deactivated", topic="gpucloud.inventory.Sku.Deactivated")
    def _deactivated(self) -> None:
        self.active = False


class Node(Aggregate):
    """A machine with ``gpu_count`` GPUs of one model, indexed 0..gpu_count-1.

    A new node is ``active``. Any state may follow any other: a node going offline is a fact
    to record, not a request to refuse. Claims survive draining and going offline; only new
    claims need an active node.
    """

    TOPIC = "gpucloud.inventory.Node"

    class Event(Aggregate.Event):
        TOPIC = "gpucloud.inventory.Node.Event"

    @event("Registered", topic="gpucloud.inventory.Node.Registered")
    def __init__(
        self,
        id: UUID,
        region: str,
        gpu_model: str,
        gpu_count: int,
        labels: dict[str, str],
        driver: str,
        address: str | None,
        request_hash: str,
    ) -> None:
        self.region = region
        self.gpu_model = gpu_model
        self.gpu_count = gpu_count
        self.labels = dict(labels)
        self.driver = driver
        self.address = address
        self.request_hash = request_hash
        self.state = "active"
        self.claims: dict[str, tuple[int, ...]] = {}
        self.claim_allocations: dict[str, UUID] = {}
        self.released_claims: set[str] = set()

    @classmethod
    def register(
        cls,
        node_id: UUID,
        *,
        region: str,
        gpu_model: str,
        gpu_count: int,
        labels: Mapping[str, str],
        driver: str,
        address: str | None,
        request_hash: str,
    ) -> Node:
        [region] = check_regions([region])
        driver, address = check_endpoint(driver, address)
        return cls(
            id=node_id,
            region=region,
            gpu_model=check_name(gpu_model, "gpu_model"),
            gpu_count=check_int(gpu_count, "gpu_count", 1, MAX_NODE_GPUS),
            labels=check_labels(labels),
            driver=driver,
            address=address,
            request_hash=request_hash,
        )

    @property
    def free_gpus(self) -> tuple[int, ...]:
        """The unclaimed GPU indices, lowest first."""
        used = {index for indices in self.claims.values() for index in indices}
        return tuple(index for index in range(self.gpu_count) if index not in used)

    def set_state(self, state: str) -> None:
        if state not in NODE_STATES:
            raise ValidationFailedError(f"state must be one of {', '.join(NODE_STATES)}")
        if state != self.state:
            self._state_changed(state=state)

    def claim(self, claim_id: str, allocation_id: UUID, gpus: int) -> tuple[int, ...]:
        """Claim ``gpus`` GPUs (the lowest free indices) for an allocation; returns them."""
        claim_id = check_claim_id(claim_id)
        gpus = check_int(gpus, "gpus", 1, MAX_NODE_GPUS)
        if not isinstance(allocation_id, UUID):
            raise ValidationFailedError("allocation_id must be a UUID")
        if claim_id in self.claims:
            return self._existing_claim(claim_id, allocation_id, gpus)
        if claim_id in self.released_claims:
            raise IdempotencyKeyReusedError(f"claim {claim_id} was released; use a new claim id")
        if self.state != "active":
            raise NodeNotActiveError(f"node {self.id} is {self.state}: no new claims")
        free = self.free_gpus
        if len(free) < gpus:
            raise CapacityExhaustedError(f"node {self.id} has {len(free)} free GPUs, not {gpus}")
        self._claimed(claim_id=claim_id, allocation_id=allocation_id, gpu_indices=free[:gpus])
        return free[:gpus]

    def release(self, claim_id: str) -> None:
        """Give a claim's GPUs back; releasing an unknown or released claim does nothing."""
        if claim_id in self.claims:
            self._released(
                claim_id=claim_id,
                allocation_id=self.claim_allocations[claim_id],
                gpu_indices=self.claims[claim_id],
            )

    def _existing_claim(self, claim_id: str, allocation_id: UUID, gpus: int) -> tuple[int, ...]:
        held = self.claims[claim_id]
        if len(held) != gpus or self.claim_allocations[claim_id] != allocation_id:
            raise IdempotencyKeyReusedError(f"claim {claim_id} exists with another request")
        return held

    @event("StateChanged", topic="gpucloud.inventory.Node.StateChanged")
    def _state_changed(self, state: str) -> None:
        self.state = state

    @event("CapacityClaimed", topic="gpucloud.inventory.Node.CapacityClaimed")
    def _claimed(self, claim_id: str, allocation_id: UUID, gpu_indices: tuple[int, ...]) -> None:
        self.claims[claim_id] = tuple(gpu_indices)
        self.claim_allocations[claim_id] = allocation_id

    @event("ClaimReleased", topic="gpucloud.inventory.Node.ClaimReleased")
    def _released(self, claim_id: str, allocation_id: UUID, gpu_indices: tuple[int, ...]) -> None:
        del self.claims[claim_id]
        del self.claim_allocations[claim_id]
        self.released_claims.add(claim_id)
