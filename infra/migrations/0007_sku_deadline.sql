-- A SKU's provisioning deadline, shown with the SKU: an allocation not running this long after
-- its request fails with provisioning_timeout. Rows projected before this migration show the
-- default until the projection is rebuilt (`gpucloud projections rebuild skus`).

ALTER TABLE skus ADD COLUMN provision_deadline_seconds integer NOT NULL DEFAULT 600;

-- The view's s.* was expanded when it was created: create it again to include the column.
DROP VIEW sku_regions;
CREATE VIEW sku_regions AS
    SELECT s.*, r.region
    FROM skus AS s CROSS JOIN LATERAL unnest(s.regions) AS r(region);
