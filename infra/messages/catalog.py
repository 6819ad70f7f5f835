"""Wire contract of the inventory context: SKUs and Nodes (platform-level: tenant = nil id)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import ConfigDict, Field

from domain.catalog import Node, Sku
from domain.identity import PLATFORM
from infra.messages import names as n
from infra.messages.names import NODE_TOPIC, SKU_TOPIC
from infra.messages.wire import WireEvent, WireModel, published

MicroDollars = Field(ge=1, description="integer micro-dollars (1e-6 USD) per GPU-hour")


class SkuCreatedV1(WireModel):
    """A SKU was added to the catalog (it starts active)."""

    model_config = ConfigDict(title="SkuCreated")
    schema_version: Literal[1] = 1
    sku_id: UUID
    name: str
    gpu_model: str
    gpus: int
    vcpus: int
    ram_gib: int
    disk_gib: int
    regions: list[str]
    price_per_gpu_hour: int = MicroDollars
    provision_deadline_seconds: int = 600
    at: datetime


class SkuPriceChangedV1(WireModel):
    model_config = ConfigDict(title="SkuPriceChanged")
    schema_version: Literal[1] = 1
    sku_id: UUID
    price_per_gpu_hour: int = MicroDollars
    at: datetime


class SkuActivationV1(WireModel):
    """A SKU was activated or deactivated (ce_type says which)."""

    model_config = ConfigDict(title="SkuActivation")
    schema_version: Literal[1] = 1
    sku_id: UUID
    at: datetime


class NodeRegisteredV1(WireModel):
    model_config = ConfigDict(title="NodeRegistered")
    schema_version: Literal[1] = 1
    node_id: UUID
    region: str
    gpu_model: str
    gpu_count: int
    labels: dict[str, str]
    driver: Literal["local", "ssh"]
    address: str | None
    at: datetime


class NodeStateChangedV1(WireModel):
    model_config = ConfigDict(title="NodeStateChanged")
    schema_version: Literal[1] = 1
    node_id: UUID
    state: Literal["active", "draining", "offline"]
    at: datetime


class NodeClaimV1(WireModel):
    """GPUs of a node were claimed for, or released by, an allocation (ce_type says which)."""

    model_config = ConfigDict(title="NodeClaim")
    schema_version: Literal[1] = 1
    node_id: UUID
    claim_id: str
    allocation_id: UUID
    gpu_indices: list[int]
    at: datetime


def _on(topic: str, ce_type: str, model: type[WireModel], id_field: str) -> WireEvent:
    return published(ce_type, topic, model, id_field, lambda e: PLATFORM)


_sku: Any = Sku
_node: Any = Node
CATALOG_WIRE: dict[type[Any], WireEvent] = {
    _sku.Created: _on(SKU_TOPIC, n.SKU_CREATED, SkuCreatedV1, "sku_id"),
    _sku.PriceChanged: _on(SKU_TOPIC, n.SKU_PRICE_CHANGED, SkuPriceChangedV1, "sku_id"),
    _sku.Activated: _on(SKU_TOPIC, n.SKU_ACTIVATED, SkuActivationV1, "sku_id"),
    _sku.Deactivated: _on(SKU_TOPIC, n.SKU_DEACTIVATED, SkuActivationV1, "sku_id"),
    _node.Registered: _on(NODE_TOPIC, n.NODE_REGISTERED, NodeRegisteredV1, "node_id"),
    _node.StateChanged: _on(NODE_TOPIC, n.NODE_STATE_CHANGED, NodeStateChangedV1, "node_id"),
    _node.CapacityClaimed: _on(NODE_TOPIC, n.NODE_CAPACITY_CLAIMED, NodeClaimV1, "node_id"),
    _node.ClaimReleased: _on(NODE_TOPIC, n.NODE_CLAIM_RELEASED, NodeClaimV1, "node_id"),
}
