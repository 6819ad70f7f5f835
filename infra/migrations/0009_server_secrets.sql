-- Secrets every replica shares: 'signing' signs pagination cursors and position tokens, so a
-- client cannot forge one. Made once, here, from PostgreSQL's strong random source
-- (gen_random_uuid: 122 random bits each). Rotating it invalidates cursors and tokens in flight
-- (their holders start over or read without a token).

CREATE TABLE server_secrets (
    name text PRIMARY KEY,
    value bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO server_secrets (name, value)
SELECT 'signing', decode(replace(gen_random_uuid()::text || gen_random_uuid()::text
                                 || gen_random_uuid()::text, '-', ''), 'hex');
