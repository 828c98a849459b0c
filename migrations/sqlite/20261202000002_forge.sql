-- SQLite counterpart of ../20261202000002_forge.sql (times are RFC 3339 text in UTC).
CREATE TABLE forge_installations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cloud_id TEXT UNIQUE,
    installation_id TEXT NOT NULL UNIQUE,
    tenant_key TEXT NOT NULL,
    api_base_url TEXT,
    app_id TEXT,
    environment_type TEXT,
    status TEXT NOT NULL CHECK (status IN ('installed', 'uninstalled')),
    token_key_id TEXT,
    token_nonce BLOB,
    token_ciphertext BLOB,
    -- When the token stops being used, Unix seconds.
    token_expires_at BIGINT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX forge_installations_tenant_idx ON forge_installations (tenant_key);

CREATE TABLE forge_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    installation_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    event_id TEXT NOT NULL,
    -- Unix milliseconds, set by the ingest (one clock for both backends' comparisons).
    received_at_ms BIGINT NOT NULL
);

CREATE INDEX forge_deliveries_lookup_idx ON forge_deliveries (installation_id, content_hash, id);
CREATE INDEX forge_deliveries_received_idx ON forge_deliveries (received_at_ms);
