"""Inventory context: command handlers for SKUs and nodes, and the optimistic capacity claims.

Every update is load, decide, save. The store refuses a save whose aggregate version another
writer already took (``IntegrityError``); the update then reloads and decides again, a bounded
number of times. For capacity claims that bound is also the answer: a claim that keeps losing
races is reported as ``CapacityExhaustedError`` and the caller tries another node.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from domain.catalog import CapacityExhaustedError, Node, Sku
from domain.errors import IdempotencyKeyReusedError, NotFoundError
from handlers.identity import Written, id_for_key, request_hash

UPDATE_ATTEMPTS = 5
BACKOFF_SECONDS = 0.002  # times the attempt number, jittered

A = TypeVar("A", Sku, Node)
R = TypeVar("R")


class Inventory(Application[UUID]):
    """The inventory context's application: one notification log, relayed to inventory.*."""

    name = "inventory"

    def create_sku(
        self,
        *,
        name: str,
        gpu_model: str,
        gpus: int,
        vcpus: int,
        ram_gib: int,
        disk_gib: int,
        regions: Iterable[str],
        price_per_gpu_hour: int,
        idempotency_key: str | None = None,
    ) -> Written:
        spec = dict(name=name, gpu_model=gpu_model, gpus=gpus, vcpus=vcpus, ram_gib=ram_gib)
        spec.update(disk_gib=disk_gib, regions=list(regions), price_per_gpu_hour=price_per_gpu_hour)
        return self._create(Sku.create, id_for_key("sku", idempotency_key), spec)

    def change_price(self, sku_id: UUID, price_per_gpu_hour: int) -> Written:
        sku, _ = self._update(Sku, sku_id, lambda sku: sku.change_price(price_per_gpu_hour))
        return Written(sku.id, sku.version, created=False)

    def set_sku_active(self, sku_id: UUID, active: bool) -> Written:
        sku, _ = self._update(Sku, sku_id, lambda sku: sku.set_active(active))
        return Written(sku.id, sku.version, created=False)

    def register_node(
        self,
        *,
        region: str,
        gpu_model: str,
        gpu_count: int,
        labels: Mapping[str, str] | None = None,
        driver: str = "local",
        address: str | None = None,
        idempotency_key: str | None = None,
    ) -> Written:
        spec = dict(region=region, gpu_model=gpu_model, gpu_count=gpu_count, driver=driver)
        spec.update(labels=dict(labels or {}), address=address)
        return self._create(Node.register, id_for_key("node", idempotency_key), spec)

    def set_node_state(self, node_id: UUID, state: str) -> Written:
        node, _ = self._update(Node, node_id, lambda node: node.set_state(state))
        return Written(node.id, node.version, created=False)

    def claim(
        self, node_id: UUID, claim_id: str, allocation_id: UUID, gpus: int
    ) -> tuple[int, ...]:
        """Claim GPUs on a node; the same claim again returns the same indices."""
        try:
            _, indices = self._update(
                Node, node_id, lambda node: node.claim(claim_id, allocation_id, gpus)
            )
        except IntegrityError as lost:
            raise CapacityExhaustedError(f"node {node_id}: lost every race for capacity") from lost
        return indices

    def release(self, node_id: UUID, claim_id: str) -> Written:
        node, _ = self._update(Node, node_id, lambda node: node.release(claim_id))
        return Written(node.id, node.version, created=False)

    def get_sku(self, sku_id: UUID) -> Sku:
        return self._get(Sku, sku_id)

    def get_node(self, node_id: UUID) -> Node:
        return self._get(Node, node_id)

    def _update(self, cls: type[A], aggregate_id: UUID, change: Callable[[A], R]) -> tuple[A, R]:
        """Load, change, save; on a lost race reload and decide again (bounded)."""
        for attempt in range(1, UPDATE_ATTEMPTS):
            try:
                return self._update_once(cls, aggregate_id, change)
            except IntegrityError:
                time.sleep(random.uniform(0, BACKOFF_SECONDS * attempt))
        return self._update_once(cls, aggregate_id, change)

    def _update_once(
        self, cls: type[A], aggregate_id: UUID, change: Callable[[A], R]
    ) -> tuple[A, R]:
        aggregate = self._get(cls, aggregate_id)
        result = change(aggregate)
        self.save(aggregate)
        return aggregate, result

    def _create(
        self, factory: Callable[..., A], aggregate_id: UUID, spec: dict[str, Any]
    ) -> Written:
        """Create once per id: the same id and spec again answer as the first time did.

        The spec is validated before the id is looked up, so a reused key with an invalid
        body is a ValidationFailedError, with a valid but different one IdempotencyKeyReused.
        """
        digest = request_hash(**spec)
        aggregate = factory(aggregate_id, **spec, request_hash=digest)
        if (existing := self._find(type(aggregate), aggregate_id)) is not None:
            return self._replayed(existing, digest)
        try:
            self.save(aggregate)
        except IntegrityError:  # the same key, saved by a concurrent request
            return self._replayed(self._get(type(aggregate), aggregate_id), digest)
        return Written(aggregate.id, aggregate.version, created=True)

    def _get(self, cls: type[A], aggregate_id: UUID) -> A:
        found = self._find(cls, aggregate_id)
        if found is None:
            raise NotFoundError(f"{cls.__name__.lower()} {aggregate_id} not found")
        return found

    def _find(self, cls: type[A], aggregate_id: UUID) -> A | None:
        try:
            found: object = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, cls) else None

    @staticmethod
    def _replayed(aggregate: Sku | Node, digest: str) -> Written:
        if aggregate.request_hash != digest:
            raise IdempotencyKeyReusedError("Idempotency-Key was used with a different request")
        return Written(aggregate.id, aggregate.version, created=False)
