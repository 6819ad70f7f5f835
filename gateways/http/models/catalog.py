"""HTTP shapes of the catalog: request bodies, list queries and answers for SKUs and nodes.
Money is integer micro-dollars; counts are strict integers (no ``true``, no ``2.0``), as the
domain wants them."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    StrictInt,
    WithJsonSchema,
)

from domain.catalog import (
    DEFAULT_PROVISION_DEADLINE,
    MAX_LABELS,
    MAX_NODE_GPUS,
    MAX_PRICE,
    MAX_SKU_GPUS,
)
from gateways.http.models.common import ListQuery, Region, Strict
from gateways.http.text import text

Model = Annotated[str, text(64, min_length=1, examples=["NVIDIA H100 80GB HBM3"])]
DIGITS = r"^[0-9]{1,12}$"
MicroDollars = Annotated[
    int,
    BeforeValidator(lambda v: int(v) if isinstance(v, str) and re.match(DIGITS, v) else v),
    Field(strict=True, ge=1, le=MAX_PRICE),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_PRICE},
                {"type": "string", "pattern": DIGITS},
            ],
            "description": "Integer micro-dollars (1e-6 USD) per GPU-hour, as a JSON integer "
            "or a string of digits; never a fraction",
            "examples": [2_500_000],
        }
    ),
]
NodeState = Literal["active", "draining", "offline"]


class CreateSku(Strict):
    name: str = text(64, min_length=1, examples=["1x H100"])
    gpu_model: Model
    gpus: Annotated[StrictInt, Field(ge=1, le=MAX_SKU_GPUS)]
    vcpus: Annotated[StrictInt, Field(ge=1, le=1024)]
    ram_gib: Annotated[StrictInt, Field(ge=1, le=65536)]
    disk_gib: Annotated[StrictInt, Field(ge=0, le=1_048_576)]
    regions: list[Region] = Field(min_length=1, max_length=32)
    price_per_gpu_hour: MicroDollars
    provision_deadline_seconds: Annotated[StrictInt, Field(ge=10, le=86_400)] = Field(
        default=DEFAULT_PROVISION_DEADLINE,
        description="an allocation not running this long after its request fails with "
        "provisioning_timeout",
    )


class ChangePrice(Strict):
    price_per_gpu_hour: MicroDollars


class RegisterNode(Strict):
    driver: Literal["local", "ssh"]
    address: str | None = text(
        260, default=None, description="host:port; ssh nodes only", examples=[None]
    )
    region: Region
    gpu_model: Model
    gpu_count: Annotated[StrictInt, Field(ge=1, le=MAX_NODE_GPUS)]
    labels: dict[Annotated[str, text(64, min_length=1)], Annotated[str, text(256)]] = Field(
        default_factory=dict, max_length=MAX_LABELS
    )


class SetNodeState(Strict):
    state: NodeState


class Availability(BaseModel):
    region: str
    units: int = Field(description="how many more units of this SKU fit in the region now")


class SkuOut(BaseModel):
    id: UUID
    name: str
    gpu_model: str
    gpus: int
    vcpus: int
    ram_gib: int
    disk_gib: int
    regions: list[str]
    price_per_gpu_hour: int = Field(description="integer micro-dollars per GPU-hour")
    provision_deadline_seconds: int = Field(
        description="an allocation not running this long after its request fails with "
        "provisioning_timeout"
    )
    active: bool
    created_at: datetime
    version: int


class SkuView(SkuOut):
    availability: list[Availability]


class NodeOut(BaseModel):
    id: UUID
    region: str
    gpu_model: str
    gpu_count: int
    free_gpus: int
    labels: dict[str, str]
    driver: str
    address: str | None
    state: str
    created_at: datetime
    version: int


class ClaimOut(BaseModel):
    claim_id: str
    allocation_id: UUID
    gpu_indices: list[int]
    claimed_at: datetime


class NodeView(NodeOut):
    claims: list[ClaimOut]


class SkuPage(BaseModel):
    items: list[SkuView]
    next_cursor: str | None


class NodePage(BaseModel):
    items: list[NodeOut]
    next_cursor: str | None


class SkuQuery(ListQuery):
    sort: Literal["created_at", "price_per_gpu_hour", "name"] = "created_at"
    region: Region | None = None
    gpu_model: str | None = Field(default=None, max_length=64)
    active: bool | None = None

    def filters(self) -> dict[str, Any]:
        return {"region": self.region, "gpu_model": self.gpu_model, "active": self.active}


class NodeQuery(ListQuery):
    sort: Literal["created_at"] = "created_at"
    region: Region | None = None
    state: NodeState | None = None
    gpu_model: str | None = Field(default=None, max_length=64)

    def filters(self) -> dict[str, Any]:
        return {"region": self.region, "state": self.state, "gpu_model": self.gpu_model}
