-- The process managers' inboxes move to the write side. `allocation_work` and
-- `tenant_depletions` were written by the projector from Kafka, so provisioning stopped with
-- the relay, the broker or the projector, and a rebuild of the allocations read model erased
-- the saga's leases, attempts and backoff. Now the worker follows the compute and ledger
-- notification logs in PostgreSQL itself (infra/inboxes.py), saving its position in the same
-- transaction as the rows it writes; no projection owns these tables.
--
-- allocation_work also carries what billing and the force-release policy select on, so they
-- no longer read the allocations read model either. Its rows are rebuilt from the start of the
-- compute log by the first follow after this migration (the log is the truth).

TRUNCATE allocation_work;
ALTER TABLE allocation_work
    ADD COLUMN started_at timestamptz,
    ADD COLUMN billing_ends_at timestamptz,
    ADD COLUMN billed_through timestamptz;
CREATE INDEX allocation_work_billable ON allocation_work (tenant_id, allocation_id)
    WHERE started_at IS NOT NULL;
CREATE INDEX allocation_work_running ON allocation_work (tenant_id)
    WHERE state = 'running';

-- How far each inbox has followed its context's notification log.
CREATE TABLE inbox_positions (
    inbox text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO inbox_positions (inbox) VALUES ('saga'), ('depletions');
