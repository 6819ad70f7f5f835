"""Per-key rate limiting shared by every API replica: token buckets in PostgreSQL.

Each ``take`` is one upsert. The row lock of ``ON CONFLICT DO UPDATE`` serialises concurrent
takes on a key, across connections and replicas, and the refill is computed from the database
clock, so replicas with skewed clocks agree. A take that waited for the lock may carry a
``clock_timestamp()`` older than the row's: elapsed time is floored at zero and ``updated_at``
never moves back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

IDLE_SECONDS = 3600.0

TAKE = """
INSERT INTO rate_limit_buckets AS b (key, tokens, allowed, updated_at)
VALUES (%(key)s, %(burst)s - 1, true, clock_timestamp())
ON CONFLICT (key) DO UPDATE SET (tokens, allowed, updated_at) = (
    SELECT r.tokens - CASE WHEN r.tokens >= 1 THEN 1 ELSE 0 END,
           r.tokens >= 1,
           GREATEST(b.updated_at, EXCLUDED.updated_at)
    FROM (SELECT LEAST(%(burst)s, b.tokens + %(rate)s * GREATEST(0, extract(
              epoch FROM EXCLUDED.updated_at - b.updated_at)::float8)) AS tokens) AS r
)
RETURNING allowed, tokens
"""

CLEANUP = """
DELETE FROM rate_limit_buckets
WHERE updated_at < clock_timestamp() - make_interval(secs => %(idle)s)
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_seconds: int
    """0 when allowed; otherwise whole seconds until a token is back (at least 1)."""
    remaining: int


class PostgresRateLimiter:
    """``burst`` tokens per key, refilled at ``rate_per_second``; each request takes one."""

    def __init__(self, pool: AsyncConnectionPool, rate_per_second: float, burst: int) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("rate_per_second must be > 0 and burst >= 1")
        self.pool, self.rate, self.burst = pool, float(rate_per_second), burst

    async def take(self, key: str) -> Decision:
        params = {"key": key, "rate": self.rate, "burst": float(self.burst)}
        async with self.pool.connection() as conn:
            cur = await conn.execute(TAKE, params)
            row = await cur.fetchone()
        assert row is not None  # an upsert with RETURNING always returns its row
        allowed, tokens = bool(row[0]), float(row[1])
        return Decision(allowed, 0 if allowed else self._wait(tokens), math.floor(tokens))

    def _wait(self, tokens: float) -> int:
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    async def cleanup(self) -> int:
        """Delete buckets idle for over an hour (or long enough to be full again, if longer);
        returns how many. Forgetting a full bucket changes nothing: the next take makes it anew.
        """
        return await forget_idle_buckets(self.pool, refill_seconds(self.rate, self.burst))


def refill_seconds(rate_per_second: float, burst: int) -> float:
    """How long a bucket must lie idle before forgetting it changes nothing."""
    return max(IDLE_SECONDS, burst / rate_per_second) if rate_per_second > 0 else IDLE_SECONDS


async def forget_idle_buckets(pool: AsyncConnectionPool, idle_seconds: float) -> int:
    """Delete the buckets no request touched for ``idle_seconds``; returns how many. The
    worker runs it (every ``GPUCLOUD_RATE_LIMIT_CLEANUP_SECONDS``) so the table holds only the
    keys in recent use, not every key that ever called."""
    async with pool.connection() as conn:
        cur = await conn.execute(CLEANUP, {"idle": idle_seconds})
        return cur.rowcount


class FailureThrottle:
    """Failed authentications per client address: ``burst`` failures, refilled at ``rate`` a
    second (the same PostgreSQL buckets, keyed ``authfail:<address>``, so replicas share them).

    Only failures take tokens, so valid keys cost nothing here. An address whose bucket ran dry
    is remembered in this process until it refills, and refused before its key is even looked
    at (429), so a scanner cannot go on trying keys at full speed."""

    def __init__(self, pool: AsyncConnectionPool, rate_per_second: float, burst: int) -> None:
        self.buckets = PostgresRateLimiter(pool, rate_per_second, burst)
        self.blocked_until: dict[str, float] = {}

    def retry_after(self, address: str, now: float) -> int | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        until = self.blocked_until.get(address)
        if until is None or until <= now:
            self.blocked_until.pop(address, None)
            return None
        return max(1, math.ceil(until - now))

    async def failed(self, address: str, now: float) -> int | None:
        """Count a failure; returns the seconds to wait when this one used up the bucket."""
        decision = await self.buckets.take(f"authfail:{address}")
        if decision.allowed:
            return None
        if len(self.blocked_until) > 100_000:  # a flood of addresses: forget the oldest half
            for stale in sorted(self.blocked_until, key=self.blocked_until.__getitem__)[:50_000]:
                del self.blocked_until[stale]
        self.blocked_until[address] = now + decision.retry_after_seconds
        return decision.retry_after_seconds
