-- Token buckets for per-key rate limiting, shared by every API replica (infra/ratelimit.py).
-- `allowed` is the decision of the last take: the one-statement upsert returns it.

CREATE TABLE rate_limit_buckets (
    key text PRIMARY KEY,
    tokens double precision NOT NULL,
    allowed boolean NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE INDEX rate_limit_buckets_updated_at ON rate_limit_buckets (updated_at);
