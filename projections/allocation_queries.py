"""What the compute workers read from the allocation read models: the saga's due work (taken
under a lease, so no two workers step the same allocation at once), the allocations to bill,
a tenant's running allocations and GPUs in use, and the depletions still to handle.

These are hints, never the truth: each worker loads the aggregate and decides there, so a
read model behind the event store costs a wasted step at worst.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection


async def running_allocations(conn: AsyncConnection[Any], tenant_id: UUID | None) -> list[UUID]:
    """The tenant's running allocations (every tenant's when None, for ops), oldest first."""
    cur = await conn.execute(
        "SELECT id FROM allocations WHERE state = 'running' "
        "AND (%s::uuid IS NULL OR tenant_id = %s::uuid) ORDER BY created_at, id",
        (tenant_id, tenant_id),
    )
    return [row[0] for row in await cur.fetchall()]


async def billable_allocations(
    conn: AsyncConnection[Any],
    limit: int,
    now: datetime,
    after: tuple[UUID, UUID] | None = None,
) -> list[tuple[UUID, UUID]]:
    """(tenant, allocation) of allocations with a window to bill at ``now``: running ones with a
    closed minute not billed yet, ended ones not billed up to their end. Ordered by tenant, so
    a batch touches few ledgers; keyset after the last pair of the previous page."""
    tenant, last = after or (None, None)
    cur = await conn.execute(
        "SELECT tenant_id, id FROM allocations WHERE started_at IS NOT NULL AND ("
        "(billing_ends_at IS NULL AND COALESCE(billed_through, started_at) "
        "< date_trunc('minute', %s::timestamptz)) OR (billing_ends_at IS NOT NULL AND "
        "(billed_through IS NULL OR billed_through < billing_ends_at))) "
        "AND (%s::uuid IS NULL OR (tenant_id, id) > (%s::uuid, %s::uuid)) "
        "ORDER BY tenant_id, id LIMIT %s",
        (now, tenant, tenant, last, limit),
    )
    return [(row[0], row[1]) for row in await cur.fetchall()]


async def take_due_work(
    conn: AsyncConnection[Any], limit: int, lease_seconds: float
) -> list[tuple[UUID, str]]:
    """Lease up to ``limit`` due saga rows, longest due first: each is not due again for
    ``lease_seconds`` (unless its state moves on), so another worker skips it. Rows another
    taker holds locked are skipped, never waited for."""
    async with conn.transaction():
        cur = await conn.execute(
            "WITH due AS (SELECT allocation_id FROM allocation_work WHERE due_at <= now() "
            "ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED) "
            "UPDATE allocation_work AS w SET due_at = now() + %s * interval '1 second', "
            "attempts = w.attempts + 1 FROM due WHERE w.allocation_id = due.allocation_id "
            "RETURNING w.allocation_id, w.state",
            (limit, lease_seconds),
        )
        return [(row[0], row[1]) for row in await cur.fetchall()]


async def pending_depletions(
    conn: AsyncConnection[Any], limit: int = 500
) -> list[tuple[UUID, int]]:
    """(tenant, ledger version) of each depletion not handled yet, oldest first."""
    cur = await conn.execute(
        "SELECT tenant_id, ledger_version FROM tenant_depletions WHERE handled_at IS NULL "
        "ORDER BY at, tenant_id, ledger_version LIMIT %s",
        (limit,),
    )
    return [(row[0], int(row[1])) for row in await cur.fetchall()]


async def mark_depletion_handled(
    conn: AsyncConnection[Any], tenant_id: UUID, ledger_version: int
) -> None:
    await conn.execute(
        "UPDATE tenant_depletions SET handled_at = now() "
        "WHERE tenant_id = %s AND ledger_version = %s AND handled_at IS NULL",
        (tenant_id, ledger_version),
    )


async def back_off_work(
    conn: AsyncConnection[Any], allocation_id: UUID, state: str, error: str, cap_seconds: float
) -> None:
    """A failed step: due again after 2^attempts seconds (at most ``cap_seconds``), if the row
    is still in ``state``."""
    await conn.execute(
        "UPDATE allocation_work SET last_error = %s, due_at = now() + "
        "least(power(2, attempts), %s) * interval '1 second' "
        "WHERE allocation_id = %s AND due_at IS NOT NULL AND state = %s",
        (error, cap_seconds, allocation_id, state),
    )
