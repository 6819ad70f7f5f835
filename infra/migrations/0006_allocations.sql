-- Allocation read models: the allocation's lifecycle columns, its billed usage windows, the
-- provisioning saga's inbox, and the depleted balances the force-release policy acts on.

ALTER TABLE allocations
    ADD COLUMN gpu_indices integer[],
    ADD COLUMN price_per_gpu_hour bigint,
    ADD COLUMN started_at timestamptz,
    ADD COLUMN released_at timestamptz,
    -- when billing stopped (release asked for, or the instance lost), to the second
    ADD COLUMN billing_ends_at timestamptz,
    ADD COLUMN billed_through timestamptz,
    ADD COLUMN release_reason text,
    ADD COLUMN failure_detail text,
    ADD COLUMN settled boolean NOT NULL DEFAULT false,
    ADD COLUMN hold_id text,
    ADD COLUMN deadline_at timestamptz;
-- What the biller walks by id: started and not billed up to where billing ends.
CREATE INDEX allocations_billable ON allocations (tenant_id, id)
    WHERE started_at IS NOT NULL
    AND (billing_ends_at IS NULL OR billed_through IS NULL OR billed_through < billing_ends_at);

CREATE TABLE usage_windows (
    allocation_id uuid NOT NULL,
    tenant_id uuid NOT NULL,
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL,
    seconds integer NOT NULL,
    gpus integer,
    price_per_gpu_hour bigint,
    amount bigint NOT NULL,
    taken bigint NOT NULL,
    posting_key text,
    billed_at timestamptz NOT NULL,
    PRIMARY KEY (allocation_id, window_start)
);
CREATE INDEX usage_windows_by_tenant ON usage_windows (tenant_id, window_start, allocation_id);

-- The provisioning saga's inbox: one row per allocation, due when its state wants a step.
CREATE TABLE allocation_work (
    allocation_id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    state text NOT NULL,
    version bigint NOT NULL,
    due_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    last_error text
);
CREATE INDEX allocation_work_due ON allocation_work (due_at) WHERE due_at IS NOT NULL;

-- Ledger BalanceDepleted events, until the force-release policy has handled each.
CREATE TABLE tenant_depletions (
    tenant_id uuid NOT NULL,
    ledger_version bigint NOT NULL,
    at timestamptz NOT NULL,
    handled_at timestamptz,
    PRIMARY KEY (tenant_id, ledger_version)
);
CREATE INDEX tenant_depletions_pending ON tenant_depletions (at) WHERE handled_at IS NULL;
