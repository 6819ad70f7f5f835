-- Identity read models: users, API keys (never their secrets), and the audit log.

CREATE TABLE users (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    email text,
    role text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX users_by_tenant ON users (tenant_id, created_at, id);

CREATE TABLE api_keys (
    id uuid PRIMARY KEY,
    tenant_id uuid,
    user_id uuid,
    role text NOT NULL,
    read_only boolean NOT NULL,
    name text NOT NULL,
    prefix text NOT NULL,
    expires_at timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at, id);

CREATE TABLE audit_events (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    type text NOT NULL,
    subject text NOT NULL,
    sequence bigint NOT NULL,
    actor text NOT NULL,
    occurred_at timestamptz NOT NULL,
    data jsonb NOT NULL
);
CREATE INDEX audit_events_by_tenant ON audit_events (tenant_id, occurred_at, id);
