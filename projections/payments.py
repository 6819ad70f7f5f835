"""The payments read model: one row per payment, from ``billing.payment.v1``. Each ``changed``
event carries the payment's whole set of facts and its state, so this copies them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import dict_row

from infra.messages import names as n
from projections.envelope import Envelope
from projections.runner import Projection

PAYMENTS = Projection(name="payments", topics=(n.PAYMENT_TOPIC,), tables=("payments",))
COLUMNS = (
    "id", "tenant_id", "state", "amount", "paid", "credited", "refunded", "withdrawn", "clawed",
    "session_id", "payment_intent", "checkout_url", "expires_at", "created_at", "updated_at",
)  # fmt: skip
FACTS = ("state", "paid", "credited", "refunded", "withdrawn", "clawed", "payment_intent")


@PAYMENTS.on(n.PAYMENT_OPENED)
async def opened(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    await cur.executemany(
        "INSERT INTO payments (id, tenant_id, state, amount, created_at, updated_at) "
        "VALUES (%s, %s, 'open', %s, %s, %s) ON CONFLICT (id) DO NOTHING",
        [
            (e.subject, e.data["tenant_id"], e.data["amount"], e.data["at"], e.data["at"])
            for e in envs
        ],
    )


@PAYMENTS.on(n.PAYMENT_SESSION_CREATED)
async def session_created(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    await cur.executemany(
        "UPDATE payments SET session_id = %s, checkout_url = %s, expires_at = %s, "
        "updated_at = %s WHERE id = %s",
        [
            (d["session_id"], d["checkout_url"], d["expires_at"], d["at"], e.subject)
            for e in envs
            for d in (e.data,)
        ],
    )


@PAYMENTS.on(n.PAYMENT_CHANGED)
async def changed(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    assignments = ", ".join(f"{c} = %s" for c in FACTS)
    await cur.executemany(
        f"UPDATE payments SET {assignments}, updated_at = %s WHERE id = %s",
        [(*(e.data[c] for c in FACTS), e.data["at"], e.subject) for e in envs],
    )


async def payment(
    conn: AsyncConnection[Any], payment_id: UUID, tenant_id: UUID | None
) -> dict[str, Any] | None:
    """One payment of the tenant, any tenant's for ``None`` (ops); None for another tenant's
    (the caller answers 404)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {', '.join(COLUMNS)} FROM payments WHERE id = %s "
            "AND (%s::uuid IS NULL OR tenant_id = %s::uuid)",
            (payment_id, tenant_id, tenant_id),
        )
        return await cur.fetchone()
