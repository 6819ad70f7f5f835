"""Tenant-facing allocations read model: the queries behind GET /v1/allocations.

The table (migration 0004) is filled by the allocation projection of the allocation issue;
until then it is empty, but its scoping is already the rule: every query names the tenant,
and only ops may read across tenants.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from projections.pagination import ListSpec, Page, PageRequest, fetch_page

ALLOCATION_COLUMNS = (
    "id", "tenant_id", "sku_id", "region", "name", "state", "failure_reason", "node_id",
    "gpu_count", "created_at", "updated_at", "cost_micro", "version",
)  # fmt: skip
ALLOCATION_LIST = ListSpec("allocations", ALLOCATION_COLUMNS, ("created_at",))


async def list_allocations(conn: AsyncConnection[Any], request: PageRequest) -> Page:
    """A page of one tenant's allocations (``tenant_id=None``: every tenant's, for ops)."""
    return await fetch_page(conn, ALLOCATION_LIST, request)


async def get_allocation(
    conn: AsyncConnection[Any], allocation_id: UUID, tenant_id: UUID | None
) -> dict[str, Any] | None:
    """The allocation if it belongs to ``tenant_id`` (any tenant's when None, for ops): another
    tenant's id reads as missing."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {', '.join(ALLOCATION_COLUMNS)} FROM allocations "
            "WHERE id = %s AND (%s::uuid IS NULL OR tenant_id = %s::uuid)",
            (allocation_id, tenant_id, tenant_id),
        )
        return await cur.fetchone()
