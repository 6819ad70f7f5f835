"""Inventory context: command handlers for SKUs and nodes, and the optimistic capacity claims.

Every update is load, decide, save. The store refuses a save whose aggregate version another
writer already took (``IntegrityError``); the update then reloads and decides again, a bounded
number of times. For capacity claims that bound is also the answer: a claim that keeps losing
races is reported as ``CapacityExhaustedError`` and the caller tries another node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.catalog import DEFAULT_PROVISION_DEADLINE, CapacityExhaustedError, Node, Sku
from handlers.base import ContextApplication, Written, id_for_key, request_hash


class Inventory(ContextApplication):
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
        provision_deadline_seconds: int = DEFAULT_PROVISION_DEADLINE,
        idempotency_key: str | None = None,
    ) -> Written:
        spec = dict(name=name, gpu_model=gpu_model, gpus=gpus, vcpus=vcpus, ram_gib=ram_gib)
        spec.update(disk_gib=disk_gib, regions=list(regions), price_per_gpu_hour=price_per_gpu_hour)
        spec.update(provision_deadline_seconds=provision_deadline_seconds)
        return self._create(Sku.create, id_for_key("sku", idempotency_key), spec)

    def change_price(self, sku_id: UUID, price_per_gpu_hour: int) -> Written:
        sku, _ = self.update(Sku, sku_id, lambda sku: sku.change_price(price_per_gpu_hour))
        return Written(sku.id, sku.version, created=False)

    def set_sku_active(self, sku_id: UUID, active: bool) -> Written:
        sku, _ = self.update(Sku, sku_id, lambda sku: sku.set_active(active))
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
        node, _ = self.update(Node, node_id, lambda node: node.set_state(state))
        return Written(node.id, node.version, created=False)

    def claim(
        self, node_id: UUID, claim_id: str, allocation_id: UUID, gpus: int
    ) -> tuple[int, ...]:
        """Claim GPUs on a node; the same claim again returns the same indices."""
        try:
            _, indices = self.update(
                Node, node_id, lambda node: node.claim(claim_id, allocation_id, gpus)
            )
        except IntegrityError as lost:
            raise CapacityExhaustedError(f"node {node_id}: lost every race for capacity") from lost
        return indices

    def release(self, node_id: UUID, claim_id: str) -> Written:
        node, _ = self.update(Node, node_id, lambda node: node.release(claim_id))
        return Written(node.id, node.version, created=False)

    def get_sku(self, sku_id: UUID) -> Sku:
        return self.get(Sku, sku_id)

    def get_node(self, node_id: UUID) -> Node:
        return self.get(Node, node_id)

    def _create(
        self, factory: Callable[..., Any], aggregate_id: UUID, spec: dict[str, Any]
    ) -> Written:
        """Create once per id. The spec is validated (by the factory) before the id is looked
        up, so a reused key with an invalid body is a ValidationFailedError, with a valid but
        different one IdempotencyKeyReused."""
        digest = request_hash(**spec)
        return self.create_once(factory(aggregate_id, **spec, request_hash=digest), digest)
