"""HTTP routes of the catalog: SKUs (ops write, anyone reads, with live availability), nodes
(ops only). Allocations are in gateways/http/allocations.py.

Setting a price, a SKU's activation or a node's state are idempotent by value (the same value
again writes nothing), so only the creating routes take an ``Idempotency-Key``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError
from fastapi import APIRouter, Depends, Query, Request, Response

from domain.errors import NotFoundError, ValidationFailedError
from domain.identity import Principal
from gateways.http import consistency
from gateways.http.auth import ANY_ROLE, OPS_ONLY, system_of
from gateways.http.dispatch import blocking, dispatch
from gateways.http.identity import IdempotencyKey, PositionToken
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
from gateways.http.responses import raises
from handlers.identity import Written
from infra import metrics
from projections import catalog

router = APIRouter(prefix="/v1")
Ops = Annotated[Principal, Depends(OPS_ONLY)]
Anyone = Annotated[Principal, Depends(ANY_ROLE)]
CREATE = raises(ValidationFailedError)
CHANGE = raises(NotFoundError, ValidationFailedError, IntegrityError)
READ = raises(NotFoundError)


async def _command(
    request: Request, caller: Principal, name: str, fn: Callable[[], Written]
) -> Written:
    sys = system_of(request)
    written = await dispatch(fn, caller.actor, sys.settings.command_timeout)
    metrics.COMMANDS.labels(name, "created" if written.created else "ok").inc()
    return written


read_model = consistency.read_model


def _found(row: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    if row is None:
        raise NotFoundError(f"{kind} not found")
    return row


async def _sku_written(request: Request, response: Response, written: Written) -> SkuOut:
    location = f"/v1/skus/{written.id}"
    consistency.mark_written(
        request, response, location, catalog.SKUS.name, written.id, written.version
    )
    inventory = system_of(request).inventory
    sku = await blocking(partial(inventory.get_sku, written.id), 5)
    fields = {f: getattr(sku, f) for f in SkuOut.model_fields if hasattr(sku, f)}
    return SkuOut(**{**fields, "regions": list(sku.regions), "created_at": sku.created_on})


async def _node_written(request: Request, response: Response, written: Written) -> NodeOut:
    location = f"/v1/nodes/{written.id}"
    consistency.mark_written(
        request, response, location, catalog.NODES.name, written.id, written.version
    )
    inventory = system_of(request).inventory
    node = await blocking(partial(inventory.get_node, written.id), 5)
    fields = {f: getattr(node, f) for f in NodeOut.model_fields if hasattr(node, f)}
    return NodeOut(**{**fields, "free_gpus": len(node.free_gpus), "created_at": node.created_on})


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
    create = partial(
        system_of(request).inventory.create_sku,
        **body.model_dump(),
        idempotency_key=idempotency_key,
    )
    written = await _command(request, caller, "sku.create", create)
    return await _sku_written(request, response, written)


@router.post(
    "/skus/{sku_id}/price", response_model=SkuOut, operation_id="changeSkuPrice", responses=CHANGE
)
async def change_sku_price(
    sku_id: UUID, body: ChangePrice, request: Request, response: Response, caller: Ops
) -> SkuOut:
    change = partial(system_of(request).inventory.change_price, sku_id, body.price_per_gpu_hour)
    written = await _command(request, caller, "sku.price", change)
    return await _sku_written(request, response, written)


async def _activate(
    request: Request, response: Response, caller: Principal, sku_id: UUID, active: bool
) -> SkuOut:
    change = partial(system_of(request).inventory.set_sku_active, sku_id, active)
    written = await _command(
        request, caller, "sku.activate" if active else "sku.deactivate", change
    )
    return await _sku_written(request, response, written)


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
    register = partial(
        system_of(request).inventory.register_node,
        **body.model_dump(),
        idempotency_key=idempotency_key,
    )
    written = await _command(request, caller, "node.register", register)
    return await _node_written(request, response, written)


@router.post(
    "/nodes/{node_id}/state", response_model=NodeOut, operation_id="setNodeState", responses=CHANGE
)
async def set_node_state(
    node_id: UUID, body: SetNodeState, request: Request, response: Response, caller: Ops
) -> NodeOut:
    """Draining or offline nodes keep their claims but take no new ones."""
    change = partial(system_of(request).inventory.set_node_state, node_id, body.state)
    written = await _command(request, caller, "node.state", change)
    return await _node_written(request, response, written)


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
