-- Events a projection could not apply: kept here (and sent to the topic's .dlq) while the
-- projection moves on. Later events of a quarantined subject wait here too ("held"), so a
-- replay applies a subject's events in order. Ops list, replay and discard them with
-- `gpucloud projections quarantine ...`. The event travels as bytes: text columns cannot hold
-- the NUL that may be why it failed.

CREATE TABLE projection_quarantine (
    id bigserial PRIMARY KEY,
    projection text NOT NULL,
    subject text,                    -- NULL for a message that could not even be parsed
    sequence bigint,
    ce_type text,
    topic text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    event bytea NOT NULL,            -- the envelope (or the raw message) as JSON bytes
    error text NOT NULL,
    attempts integer NOT NULL,
    held boolean NOT NULL,           -- true: not failed itself, waits behind its subject's
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    resolution text                  -- replayed | discarded | rebuilt
);

CREATE INDEX projection_quarantine_open
    ON projection_quarantine (projection, subject) WHERE resolved_at IS NULL;
