-- SQLite counterpart of ../20261202000003_rate_limits.sql.
-- Confluence calls held back because a quota is spent, shared by every processor replica so
-- that one does not spend what another was told to wait for. scope 'tenant' holds back one
-- tenant's calls (client_key names it), 'app' every call of the app (client_key is '').
CREATE TABLE confluence_pauses (
    scope TEXT NOT NULL,
    client_key TEXT NOT NULL,
    -- Unix milliseconds: no call before this.
    paused_until_ms INTEGER NOT NULL,
    -- RateLimit-Reason as Confluence sent it, or what else caused the pause.
    reason TEXT NOT NULL,
    PRIMARY KEY (scope, client_key)
);

-- Events waiting for a retry that is due later than a worker should wait, with everything
-- of their Kafka record needed to run them again. Their offsets are committed once they are
-- here, so this table, not the topic, holds them until they are handled or dead-lettered.
-- A tenant's later events wait behind its parked one (same topic, partition and key, in
-- offset order), so order per tenant holds.
CREATE TABLE parked_events (
    topic TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset INTEGER NOT NULL,
    record_key BLOB NOT NULL,
    payload BLOB,
    -- The record's headers, as a JSON array of [name, base64 value] pairs.
    headers TEXT NOT NULL,
    timestamp_ms INTEGER,
    client_key TEXT NOT NULL,
    -- The handler to resume from (those before it are done); NULL: from the first.
    resume_handler TEXT,
    retries_used INTEGER NOT NULL,
    due_at_ms INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    parked_at_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);

CREATE INDEX parked_events_key_idx ON parked_events (topic, kafka_partition, record_key, kafka_offset);
CREATE INDEX parked_events_client_key_idx ON parked_events (client_key);
