-- Catalog read models: SKUs, nodes and their capacity claims, and the tenant-facing
-- allocations (filled by the allocation issue; its list indexes are here already).
-- Every list pages on (sort column, id), so each sort, alone or behind a filter, has an index.

CREATE TABLE skus (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    gpu_model text NOT NULL,
    gpus integer NOT NULL,
    vcpus integer NOT NULL,
    ram_gib integer NOT NULL,
    disk_gib integer NOT NULL,
    regions text[] NOT NULL,
    price_per_gpu_hour bigint NOT NULL,
    active boolean NOT NULL,
    created_at timestamptz NOT NULL,
    version bigint NOT NULL
);
CREATE INDEX skus_by_created ON skus (created_at, id);
CREATE INDEX skus_by_price ON skus (price_per_gpu_hour, id);
CREATE INDEX skus_by_name ON skus (name, id);
CREATE INDEX skus_by_model ON skus (gpu_model, created_at, id);
CREATE INDEX skus_by_active ON skus (active, created_at, id);

-- One row per SKU and region it is offered in: lists filtered by region page over this view
-- with an equality filter (the catalog is small; the view scans it).
CREATE VIEW sku_regions AS
    SELECT s.*, r.region
    FROM skus AS s CROSS JOIN LATERAL unnest(s.regions) AS r(region);

CREATE TABLE nodes (
    id uuid PRIMARY KEY,
    region text NOT NULL,
    gpu_model text NOT NULL,
    gpu_count integer NOT NULL,
    free_gpus integer NOT NULL,
    labels jsonb NOT NULL,
    driver text NOT NULL,
    address text,
    state text NOT NULL,
    created_at timestamptz NOT NULL,
    version bigint NOT NULL
);
CREATE INDEX nodes_by_created ON nodes (created_at, id);
CREATE INDEX nodes_by_region ON nodes (region, created_at, id);
CREATE INDEX nodes_by_state ON nodes (state, created_at, id);
CREATE INDEX nodes_by_model ON nodes (gpu_model, created_at, id);
-- Live availability: the active nodes of a region and GPU model, with their free GPUs.
CREATE INDEX nodes_placeable ON nodes (region, gpu_model) INCLUDE (free_gpus)
    WHERE state = 'active';

CREATE TABLE node_claims (
    node_id uuid NOT NULL,
    claim_id text NOT NULL,
    allocation_id uuid NOT NULL,
    gpu_indices integer[] NOT NULL,
    claimed_at timestamptz NOT NULL,
    PRIMARY KEY (node_id, claim_id)
);
CREATE INDEX node_claims_by_allocation ON node_claims (allocation_id);

CREATE TABLE allocations (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    sku_id uuid NOT NULL,
    region text NOT NULL,
    name text,
    state text NOT NULL,
    failure_reason text,
    node_id uuid,
    gpu_count integer NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    cost_micro bigint NOT NULL DEFAULT 0,
    version bigint NOT NULL DEFAULT 0
);
CREATE INDEX allocations_by_tenant ON allocations (tenant_id, created_at, id);
CREATE INDEX allocations_by_tenant_state ON allocations (tenant_id, state, created_at, id);
CREATE INDEX allocations_by_tenant_region ON allocations (tenant_id, region, created_at, id);
CREATE INDEX allocations_by_created ON allocations (created_at, id);
CREATE INDEX allocations_by_state ON allocations (state, created_at, id);
CREATE INDEX allocations_by_region ON allocations (region, created_at, id);
CREATE INDEX allocations_by_node ON allocations (node_id) WHERE node_id IS NOT NULL;
