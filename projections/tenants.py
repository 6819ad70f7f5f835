"""Read model: tenants, served by GET /v1/tenants/{id}."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import dict_row

from infra.messages import names as n
from projections.envelope import Envelope, columns
from projections.runner import Projection

TENANTS = Projection(name="tenants", topics=(n.TENANT_TOPIC,), tables=("tenants",))


@TENANTS.on(n.TENANT_CREATED)
async def tenants_created(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    await cur.execute(
        "INSERT INTO tenants (id, name, created_at, version, trace_id) SELECT * FROM "
        "unnest(%s::uuid[], %s::text[], %s::timestamptz[], %s::bigint[], %s::text[])",
        [
            *columns(envs, "tenant_id", "name", "created_at"),
            [e.sequence for e in envs],
            [e.trace_id for e in envs],
        ],
    )


async def get_tenant(conn: AsyncConnection[Any], tenant_id: UUID) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, name, created_at, version FROM tenants WHERE id = %s", (tenant_id,)
        )
        return await cur.fetchone()
