-- When each audited lifecycle callback arrived, in milliseconds since the Unix epoch (the
-- event's ce_time). A tenant's status is the result of its distinct callbacks applied in
-- this order (ties by event id), whichever component applies them and in whatever order
-- they are delivered, so a late or re-ordered replay never moves a tenant back. NULL on
-- rows from before: they count first, in their arrival order.
ALTER TABLE tenant_lifecycle_events ADD COLUMN event_ms BIGINT;
