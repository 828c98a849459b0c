-- SQLite counterpart of ../20261202000001_tenant_status_order.sql.
ALTER TABLE tenant_lifecycle_events ADD COLUMN event_ms INTEGER;
