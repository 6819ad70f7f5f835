-- Stored events the relay could not turn into a message (no wire entry, a payload its wire
-- model refuses): kept here (and copied to their topic's .dlq) while the relay goes on with
-- the log. Later events of the same aggregate wait here too ("held"), so no consumer sees an
-- aggregate's events out of order. Ops list, retry and discard them with
-- `gpucloud relay quarantine ...`. A row names its notification; the event stays in the store.

CREATE TABLE relay_quarantine (
    id bigserial PRIMARY KEY,
    relay_name text NOT NULL,          -- as in relay_positions: <schema>.<context>
    context text NOT NULL,             -- the application whose log it is in
    notification_id bigint NOT NULL,
    subject text NOT NULL,             -- the aggregate id
    sequence bigint NOT NULL,          -- the aggregate version
    event_type text NOT NULL,          -- the type name the store recorded
    dead_letter_topic text,            -- NULL for a held event
    error text,                        -- NULL for a held event
    held boolean NOT NULL,             -- true: not failed itself, waits behind its subject's
    attempts integer NOT NULL DEFAULT 1,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    resolution text CHECK (resolution IN ('retried', 'discarded')),
    resolved_by text,
    UNIQUE (relay_name, notification_id)
);

CREATE INDEX relay_quarantine_open
    ON relay_quarantine (relay_name, subject, sequence) WHERE resolved_at IS NULL;
