-- The Stripe webhook's inbox: every verified event, stored before the webhook answers 2xx,
-- once per event id (a redelivery only counts itself). The payments process manager
-- (workers/payments.py) applies each one: applied, ignored (with why), deferred until its
-- payment is known (due_at), or failed after too many tries (quarantined: ops see it, the
-- others go on). The effect itself is recorded in the event store, with the event id, in one
-- transaction; a row applied twice after a crash decides nothing the second time.

CREATE TABLE stripe_events (
    id text PRIMARY KEY,               -- Stripe's event id (evt_...)
    type text NOT NULL,
    livemode boolean NOT NULL,
    created timestamptz NOT NULL,      -- when Stripe made the event
    payload jsonb NOT NULL,
    received_at timestamptz NOT NULL,
    deliveries integer NOT NULL DEFAULT 1,
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'applied', 'ignored', 'failed')),
    reason text,                       -- why ignored, deferred or failed
    attempts integer NOT NULL DEFAULT 0,
    due_at timestamptz NOT NULL,       -- pending rows: when to try (again); also the lease
    finished_at timestamptz,
    payment_id uuid
);
CREATE INDEX stripe_events_due ON stripe_events (due_at) WHERE state = 'pending';
CREATE INDEX stripe_events_created ON stripe_events (created);

-- The payments read model (projections/payments.py): one row per payment, from
-- billing.payment.v1. Amounts are integer micro-dollars.
CREATE TABLE payments (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    state text NOT NULL,
    amount bigint NOT NULL,            -- requested
    paid bigint NOT NULL DEFAULT 0,
    credited bigint NOT NULL DEFAULT 0,
    refunded bigint NOT NULL DEFAULT 0,
    withdrawn bigint NOT NULL DEFAULT 0,
    clawed bigint NOT NULL DEFAULT 0,
    session_id text,
    payment_intent text,
    checkout_url text,
    expires_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX payments_by_tenant ON payments (tenant_id, created_at, id);
