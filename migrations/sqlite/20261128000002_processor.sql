-- SQLite counterpart of ../20261128000002_processor.sql.
-- Which handler has handled which event. A redelivered event skips every handler recorded
-- here, and state a handler writes commits in the same transaction as its row, so the
-- effects of one event on one handler's state happen exactly once.
CREATE TABLE handled_events (
    handler TEXT NOT NULL,
    event_id TEXT NOT NULL,
    client_key TEXT NOT NULL,
    event_type TEXT NOT NULL,
    topic TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset INTEGER NOT NULL,
    handled_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (handler, event_id)
);

CREATE INDEX handled_events_handled_at_idx ON handled_events (handled_at);

-- Per-tenant key-value state written by handlers through their context; the value is
-- JSON text.
CREATE TABLE tenant_state (
    client_key TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (client_key, key)
);
