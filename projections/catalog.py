"""Catalog read models: SKUs with live availability, nodes and their capacity claims.

Each handler writes a run of same-type events with one statement. Several events of a run may
touch the same row (two claims on one node, two price changes of one SKU), and an
``UPDATE ... FROM`` applies only one source row per target row, so every update first folds
the run per row: the latest value, the summed change, the highest version.

Claims live in ``node_claims`` (node, claim id) and ``free_gpus`` moves only by the claims
actually inserted or deleted, so a claim counts once whatever the delivery.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from infra.messages import names as n
from projections.envelope import Envelope, column
from projections.pagination import ListSpec, Page, PageRequest, fetch_page
from projections.runner import Projection

SKUS = Projection(name="skus", topics=(n.SKU_TOPIC,), tables=("skus",))
NODES = Projection(name="nodes", topics=(n.NODE_TOPIC,), tables=("nodes", "node_claims"))

SKU_COLUMNS = (
    "id", "name", "gpu_model", "gpus", "vcpus", "ram_gib", "disk_gib", "regions",
    "price_per_gpu_hour", "provision_deadline_seconds", "active", "created_at", "version",
)  # fmt: skip
DEFAULT_DEADLINE = 600  # events from before SKUs carried a deadline
SKU_SORTS = ("created_at", "price_per_gpu_hour", "name")
SKU_LIST = ListSpec("skus", SKU_COLUMNS, SKU_SORTS)
SKU_IN_REGION = ListSpec("sku_regions", SKU_COLUMNS, SKU_SORTS)  # filter: region
NODE_COLUMNS = (
    "id", "region", "gpu_model", "gpu_count", "free_gpus", "labels", "driver", "address",
    "state", "created_at", "version",
)  # fmt: skip
NODE_LIST = ListSpec("nodes", NODE_COLUMNS, ("created_at",))


def _sequences(envs: Sequence[Envelope]) -> list[int]:
    return [e.sequence for e in envs]


@SKUS.on(n.SKU_CREATED)
async def skus_created(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    fields = ("sku_id", "name", "gpu_model", "gpus", "vcpus", "ram_gib", "disk_gib")
    await cur.execute(
        "INSERT INTO skus (id, name, gpu_model, gpus, vcpus, ram_gib, disk_gib, regions, "
        "price_per_gpu_hour, provision_deadline_seconds, active, created_at, version) "
        "SELECT id, name, model, gpus, vcpus, ram, disk, "
        "ARRAY(SELECT jsonb_array_elements_text(regions)), price, deadline, true, at, version "
        "FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::int[], %s::int[], %s::int[], "
        "%s::int[], %s::jsonb[], %s::bigint[], %s::int[], %s::timestamptz[], %s::bigint[]) "
        "AS e(id, name, model, gpus, vcpus, ram, disk, regions, price, deadline, at, version)",
        [
            *(column(envs, f) for f in fields),
            [Jsonb(e.data["regions"]) for e in envs],
            column(envs, "price_per_gpu_hour"),
            [e.data.get("provision_deadline_seconds", DEFAULT_DEADLINE) for e in envs],
            column(envs, "at"),
            _sequences(envs),
        ],
    )


@SKUS.on(n.SKU_PRICE_CHANGED)
async def skus_repriced(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    await cur.execute(
        "UPDATE skus SET price_per_gpu_hour = e.price, version = e.version FROM ("
        "SELECT DISTINCT ON (id) id, price, version "
        "FROM unnest(%s::uuid[], %s::bigint[], %s::bigint[]) AS u(id, price, version) "
        "ORDER BY id, version DESC) AS e WHERE skus.id = e.id",
        [column(envs, "sku_id"), column(envs, "price_per_gpu_hour"), _sequences(envs)],
    )


async def _set_active(cur: AsyncCursor[Any], envs: Sequence[Envelope], active: bool) -> None:
    await cur.execute(
        "UPDATE skus SET active = %s, version = GREATEST(skus.version, e.version) FROM ("
        "SELECT id, max(version) AS version FROM unnest(%s::uuid[], %s::bigint[]) "
        "AS u(id, version) GROUP BY id) AS e WHERE skus.id = e.id",
        [active, column(envs, "sku_id"), _sequences(envs)],
    )


@SKUS.on(n.SKU_ACTIVATED)
async def skus_activated(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    await _set_active(cur, envs, True)


@SKUS.on(n.SKU_DEACTIVATED)
async def skus_deactivated(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    await _set_active(cur, envs, False)


@NODES.on(n.NODE_REGISTERED)
async def nodes_registered(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    fields = ("node_id", "region", "gpu_model", "gpu_count", "gpu_count")
    await cur.execute(
        "INSERT INTO nodes (id, region, gpu_model, gpu_count, free_gpus, labels, driver, "
        "address, state, created_at, version) SELECT id, region, model, gpus, free, labels, "
        "driver, address, 'active', at, version FROM unnest(%s::uuid[], %s::text[], "
        "%s::text[], %s::int[], %s::int[], %s::jsonb[], %s::text[], %s::text[], "
        "%s::timestamptz[], %s::bigint[]) "
        "AS e(id, region, model, gpus, free, labels, driver, address, at, version)",
        [
            *(column(envs, f) for f in fields),
            [Jsonb(e.data["labels"]) for e in envs],
            column(envs, "driver"),
            column(envs, "address"),
            column(envs, "at"),
            _sequences(envs),
        ],
    )


@NODES.on(n.NODE_STATE_CHANGED)
async def nodes_state_changed(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    await cur.execute(
        "UPDATE nodes SET state = e.state, version = e.version FROM ("
        "SELECT DISTINCT ON (id) id, state, version "
        "FROM unnest(%s::uuid[], %s::text[], %s::bigint[]) AS u(id, state, version) "
        "ORDER BY id, version DESC) AS e WHERE nodes.id = e.id",
        [column(envs, "node_id"), column(envs, "state"), _sequences(envs)],
    )


CLAIMS = (
    "WITH e AS (SELECT * FROM unnest(%s::uuid[], %s::text[], %s::uuid[], %s::jsonb[], "
    "%s::timestamptz[], %s::bigint[]) AS u(node_id, claim_id, allocation_id, indices, at, "
    "version)), changed AS ({change}), moved AS (SELECT node_id, sum(gpus) AS gpus "
    "FROM changed GROUP BY node_id), last AS (SELECT node_id, max(version) AS version "
    "FROM e GROUP BY node_id) "
    "UPDATE nodes SET free_gpus = nodes.free_gpus {sign} COALESCE(moved.gpus, 0), "
    "version = GREATEST(nodes.version, last.version) "
    "FROM last LEFT JOIN moved USING (node_id) WHERE nodes.id = last.node_id"
)
CLAIMED = CLAIMS.format(
    change="INSERT INTO node_claims (node_id, claim_id, allocation_id, gpu_indices, claimed_at) "
    "SELECT node_id, claim_id, allocation_id, "
    "ARRAY(SELECT jsonb_array_elements_text(indices)::int), at FROM e "
    "ON CONFLICT (node_id, claim_id) DO NOTHING "
    "RETURNING node_id, cardinality(gpu_indices) AS gpus",
    sign="-",
)
RELEASED = CLAIMS.format(
    change="DELETE FROM node_claims AS c USING e "
    "WHERE c.node_id = e.node_id AND c.claim_id = e.claim_id "
    "RETURNING c.node_id, cardinality(c.gpu_indices) AS gpus",
    sign="+",
)


def _claim_columns(envs: Sequence[Envelope]) -> list[list[Any]]:
    return [
        column(envs, "node_id"),
        column(envs, "claim_id"),
        column(envs, "allocation_id"),
        [Jsonb(e.data["gpu_indices"]) for e in envs],
        column(envs, "at"),
        _sequences(envs),
    ]


@NODES.on(n.NODE_CAPACITY_CLAIMED)
async def nodes_claimed(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    """A claim already held changes nothing (its row exists)."""
    await cur.execute(CLAIMED, _claim_columns(envs))


@NODES.on(n.NODE_CLAIM_RELEASED)
async def nodes_released(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    """A claim not held (never seen, or released already) gives nothing back."""
    await cur.execute(RELEASED, _claim_columns(envs))


AVAILABILITY = (
    "SELECT s.id, r.region, "
    "COALESCE(sum(n.free_gpus / s.gpus) FILTER (WHERE s.active), 0)::bigint AS units "
    "FROM skus AS s CROSS JOIN LATERAL unnest(s.regions) AS r(region) "
    "LEFT JOIN nodes AS n ON n.state = 'active' AND n.region = r.region "
    "AND n.gpu_model = s.gpu_model "
    "WHERE s.id = ANY(%s) GROUP BY s.id, r.region ORDER BY s.id, r.region"
)
"""Per SKU and region: how many more units (``gpus`` GPUs on one node) fit right now, the sum
over the region's active nodes of the SKU's GPU model of floor(free_gpus / gpus). Integer
division floors here (both are non-negative). An inactive SKU places nothing: 0."""


async def _with_availability(
    conn: AsyncConnection[Any], skus: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    async with conn.cursor() as cur:
        await cur.execute(AVAILABILITY, ([s["id"] for s in skus],))
        rows = await cur.fetchall()
    per_sku: dict[UUID, list[dict[str, Any]]] = {s["id"]: [] for s in skus}
    for sku_id, region, units in rows:
        per_sku[sku_id].append({"region": region, "units": int(units)})
    return [{**s, "availability": per_sku[s["id"]]} for s in skus]


async def list_skus(conn: AsyncConnection[Any], request: PageRequest) -> Page:
    """A page of SKUs, each with its availability; a ``region`` filter pages the offers."""
    spec = SKU_IN_REGION if "region" in request.filters else SKU_LIST
    page = await fetch_page(conn, spec, request)
    return Page(await _with_availability(conn, page.items), page.next_cursor)


async def get_sku(conn: AsyncConnection[Any], sku_id: UUID) -> dict[str, Any] | None:
    row = await _one(conn, "skus", SKU_COLUMNS, sku_id)
    return None if row is None else (await _with_availability(conn, [row]))[0]


async def list_nodes(conn: AsyncConnection[Any], request: PageRequest) -> Page:
    return await fetch_page(conn, NODE_LIST, request)


async def get_node(conn: AsyncConnection[Any], node_id: UUID) -> dict[str, Any] | None:
    """A node with its claims, lowest GPU first."""
    node = await _one(conn, "nodes", NODE_COLUMNS, node_id)
    if node is None:
        return None
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT claim_id, allocation_id, gpu_indices, claimed_at FROM node_claims "
            "WHERE node_id = %s ORDER BY gpu_indices[1], claim_id",
            (node_id,),
        )
        return {**node, "claims": await cur.fetchall()}


async def placement_candidates(
    conn: AsyncConnection[Any], region: str, gpu_model: str, gpus: int, limit: int = 50
) -> list[UUID]:
    """Active nodes of ``region`` and ``gpu_model`` with ``gpus`` free, best fit first: the
    fewest free GPUs (big holes stay open for big requests), then the oldest node."""
    cur = await conn.execute(
        "SELECT id FROM nodes WHERE state = 'active' AND region = %s AND gpu_model = %s "
        "AND free_gpus >= %s ORDER BY free_gpus, created_at, id LIMIT %s",
        (region, gpu_model, gpus, limit),
    )
    return [row[0] for row in await cur.fetchall()]


async def _one(
    conn: AsyncConnection[Any], table: str, columns: tuple[str, ...], row_id: UUID
) -> dict[str, Any] | None:
    """One row by id; ``table`` and ``columns`` are this module's constants, never input."""
    query = sql.SQL("SELECT {} FROM {} WHERE id = %s").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table)
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, (row_id,))
        return await cur.fetchone()


async def all_node_ids(conn: AsyncConnection[Any]) -> list[UUID]:
    """Every node that may run instances (draining ones too; offline ones answer nothing)."""
    cur = await conn.execute("SELECT id FROM nodes WHERE state <> 'offline' ORDER BY id")
    return [row[0] for row in await cur.fetchall()]
