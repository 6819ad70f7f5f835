-- Ledger read models: balances per tenant, postings, holds, and the platform's accounts.

CREATE TABLE ledger_balances (
    tenant_id uuid PRIMARY KEY,
    ledger_id uuid NOT NULL UNIQUE,
    posted bigint NOT NULL DEFAULT 0,
    held bigint NOT NULL DEFAULT 0,
    floor bigint NOT NULL,
    depleted boolean NOT NULL DEFAULT false,
    opened_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE ledger_postings (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    version bigint NOT NULL,
    kind text NOT NULL,
    key text NOT NULL,
    debit_account text NOT NULL,
    credit_account text NOT NULL,
    amount bigint NOT NULL,
    hold_id text,
    at timestamptz NOT NULL,
    hash text NOT NULL
);
CREATE INDEX ledger_postings_by_tenant ON ledger_postings (tenant_id, at, id);
CREATE INDEX ledger_postings_by_kind ON ledger_postings (tenant_id, kind, at, id);

CREATE TABLE ledger_holds (
    id text NOT NULL,
    tenant_id uuid NOT NULL,
    amount bigint NOT NULL,
    state text NOT NULL,
    expires_at timestamptz NOT NULL,
    placed_at timestamptz NOT NULL,
    closed_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX ledger_holds_by_tenant ON ledger_holds (tenant_id, placed_at, id);
CREATE INDEX ledger_holds_expiring ON ledger_holds (expires_at) WHERE state = 'open';

CREATE TABLE platform_accounts (
    account text PRIMARY KEY,
    balance bigint NOT NULL DEFAULT 0
);
