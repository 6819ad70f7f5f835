"""HTTP routes of the catalog: SKUs (ops write, anyone reads, with live availability), nodes
(ops only).

Setting a price, a SKU's activation or a node's state are idempotent by value (the same value
again writes nothing), so only the creating routes take an ``Idempotency-Key``.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError
from fastapi import APIRouter, Depends, Query, Request, Response

from domain.errors import NotFoundError, ValidationFailedError
from domain.identity import Principal
from gateways.http.auth import ANY_ROLE, OPS_ONLY
from gateways.http.models.catalog import (
    ChangePrice,
    CreateSku,
    NodeOut,
    NodePage,
    NodeQuery,
    NodeView,
    RegisterNode,
    SetNodeState,
    SkuOut,
    SkuPage,
    SkuQuery,
    SkuView,
)
from gateways.http.plumbing import IdempotencyKey, PositionToken, Wrote, command, read_model
from gateways.http.responses import raises
from handlers.identity import Written
from infra.bootstrap import System
from projections import catalog

router = APIRouter(prefix="/v1")
Ops = Annotated[Principal, Depends(OPS_ONLY)]
Anyone = Annotated[Principal, Depends(ANY_ROLE)]
CREATE = raises(ValidationFailedError)
CHANGE = raises(NotFoundError, ValidationFailedError, IntegrityError)
READ = raises(NotFoundError)


def _found(row: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    if row is None:
        raise NotFoundError(f"{kind} not found")
    return row


def _sku(sys: System, written: Written) -> SkuOut:
    sku = sys.inventory.get_sku(written.id)
    fields = {f: getattr(sku, f) for f in SkuOut.model_fields if hasattr(sku, f)}
    return SkuOut(**{**fields, "regions": list(sku.regions), "created_at": sku.created_on})


def _sku_at(written: Written) -> Wrote:
    return Wrote(f"/v1/skus/{written.id}", catalog.SKUS.name, written.id, written.version)


def _node(sys: System, written: Written) -> NodeOut:
    node = sys.inventory.get_node(written.id)
    fields = {f: getattr(node, f) for f in NodeOut.model_fields if hasattr(node, f)}
    return NodeOut(**{**fields, "free_gpus": len(node.free_gpus), "created_at": node.created_on})


def _node_at(written: Written) -> Wrote:
    return Wrote(f"/v1/nodes/{written.id}", catalog.NODES.name, written.id, written.version)


@router.post(
    "/skus", status_code=201, response_model=SkuOut, operation_id="createSku", responses=CREATE
)
async def create_sku(
    body: CreateSku,
    request: Request,
    response: Response,
    caller: Ops,
    idempotency_key: IdempotencyKey = None,
) -> SkuOut:
    """Add a SKU to the catalog (active at once). The same Idempotency-Key and body again
    answer with the same SKU; with another body, 422."""
    fields = body.model_dump()
    return await command(
        request, response, caller, "sku.create",
        lambda s: s.inventory.create_sku(**fields, idempotency_key=idempotency_key), _sku, _sku_at,
    )  # fmt: skip


@router.post(
    "/skus/{sku_id}/price", response_model=SkuOut, operation_id="changeSkuPrice", responses=CHANGE
)
async def change_sku_price(
    sku_id: UUID, body: ChangePrice, request: Request, response: Response, caller: Ops
) -> SkuOut:
    return await command(
        request, response, caller, "sku.price",
        lambda s: s.inventory.change_price(sku_id, body.price_per_gpu_hour), _sku, _sku_at,
    )  # fmt: skip


async def _activate(
    request: Request, response: Response, caller: Principal, sku_id: UUID, active: bool
) -> SkuOut:
    return await command(
        request, response, caller, "sku.activate" if active else "sku.deactivate",
        lambda s: s.inventory.set_sku_active(sku_id, active), _sku, _sku_at,
    )  # fmt: skip


@router.post(
    "/skus/{sku_id}/activate", response_model=SkuOut, operation_id="activateSku", responses=CHANGE
)
async def activate_sku(sku_id: UUID, request: Request, response: Response, caller: Ops) -> SkuOut:
    return await _activate(request, response, caller, sku_id, True)


@router.post(
    "/skus/{sku_id}/deactivate",
    response_model=SkuOut,
    operation_id="deactivateSku",
    responses=CHANGE,
)
async def deactivate_sku(sku_id: UUID, request: Request, response: Response, caller: Ops) -> SkuOut:
    """Tenants can no longer place it; its availability reads 0 everywhere."""
    return await _activate(request, response, caller, sku_id, False)


@router.get("/skus", response_model=SkuPage, operation_id="listSkus")
async def list_skus(
    request: Request,
    caller: Anyone,
    query: Annotated[SkuQuery, Query()],
    position: PositionToken = None,
) -> SkuPage:
    """The catalog, each SKU with its live availability per region."""
    async with read_model(request, position) as conn:
        page = await catalog.list_skus(conn, query.page(None))
    return SkuPage(items=[SkuView(**i) for i in page.items], next_cursor=page.next_cursor)


@router.get("/skus/{sku_id}", response_model=SkuView, operation_id="getSku", responses=READ)
async def read_sku(
    sku_id: UUID, request: Request, caller: Anyone, position: PositionToken = None
) -> SkuView:
    async with read_model(request, position) as conn:
        return SkuView(**_found(await catalog.get_sku(conn, sku_id), "sku"))


@router.post(
    "/nodes",
    status_code=201,
    response_model=NodeOut,
    operation_id="registerNode",
    responses=CREATE,
)
async def register_node(
    body: RegisterNode,
    request: Request,
    response: Response,
    caller: Ops,
    idempotency_key: IdempotencyKey = None,
) -> NodeOut:
    """Add a node (active at once). ``ssh`` nodes need an ``address``; ``local`` ones none."""
    fields = body.model_dump()
    return await command(
        request, response, caller, "node.register",
        lambda s: s.inventory.register_node(**fields, idempotency_key=idempotency_key),
        _node, _node_at,
    )  # fmt: skip


@router.post(
    "/nodes/{node_id}/state", response_model=NodeOut, operation_id="setNodeState", responses=CHANGE
)
async def set_node_state(
    node_id: UUID, body: SetNodeState, request: Request, response: Response, caller: Ops
) -> NodeOut:
    """Draining or offline nodes keep their claims but take no new ones."""
    return await command(
        request, response, caller, "node.state",
        lambda s: s.inventory.set_node_state(node_id, body.state), _node, _node_at,
    )  # fmt: skip


@router.get("/nodes", response_model=NodePage, operation_id="listNodes")
async def list_nodes(
    request: Request,
    caller: Ops,
    query: Annotated[NodeQuery, Query()],
    position: PositionToken = None,
) -> NodePage:
    async with read_model(request, position) as conn:
        page = await catalog.list_nodes(conn, query.page(None))
    return NodePage(items=[NodeOut(**i) for i in page.items], next_cursor=page.next_cursor)


@router.get("/nodes/{node_id}", response_model=NodeView, operation_id="getNode", responses=READ)
async def read_node(
    node_id: UUID, request: Request, caller: Ops, position: PositionToken = None
) -> NodeView:
    """The node with its capacity claims."""
    async with read_model(request, position) as conn:
        return NodeView(**_found(await catalog.get_node(conn, node_id), "node"))
