-- Read side and delivery bookkeeping. The event store's own tables are made by eventsourcing.

CREATE TABLE relay_positions (
    relay_name text NOT NULL,
    broker_epoch text NOT NULL,
    position bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (relay_name, broker_epoch)
);

CREATE TABLE projection_offsets (
    projection text NOT NULL,
    broker_epoch text NOT NULL,
    topic text NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (projection, broker_epoch, topic, kafka_partition)
);

CREATE TABLE projection_subjects (
    projection text NOT NULL,
    subject text NOT NULL,
    sequence bigint NOT NULL,
    PRIMARY KEY (projection, subject)
);

CREATE TABLE tenants (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz NOT NULL,
    version bigint NOT NULL,
    trace_id text
);
