-- SQLite counterpart of ../20261128000001_tenants.sql, for single-process development
-- (`tributary dev`). Same tables and columns; times are RFC 3339 text in UTC.
CREATE TABLE tenants (
    client_key TEXT PRIMARY KEY,
    app_key TEXT NOT NULL,
    base_url TEXT NOT NULL,
    display_url TEXT,
    display_url_servicedesk_help_center TEXT,
    product_type TEXT,
    description TEXT,
    server_version TEXT,
    plugins_version TEXT,
    oauth_client_id TEXT,
    installation_id TEXT,
    entitlement_id TEXT,
    entitlement_number TEXT,
    service_entitlement_number TEXT,
    -- The shared secret, AES-256-GCM encrypted with the key named by secret_key_id and
    -- bound to client_key; never stored in plain text.
    secret_key_id TEXT NOT NULL,
    secret_nonce BLOB NOT NULL,
    secret_ciphertext BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('installed', 'enabled', 'disabled', 'uninstalled')),
    installed_at TEXT NOT NULL,
    enabled_at TEXT,
    disabled_at TEXT,
    uninstalled_at TEXT,
    status_changed_at TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX tenants_base_url_idx ON tenants (base_url);

-- Every lifecycle callback applied, in arrival order: the audit trail of a tenant.
CREATE TABLE tenant_lifecycle_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_key TEXT NOT NULL,
    event_type TEXT NOT NULL CHECK (event_type IN ('installed', 'enabled', 'disabled', 'uninstalled')),
    event_id TEXT,
    base_url TEXT,
    status_after TEXT,
    received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX tenant_lifecycle_events_client_idx ON tenant_lifecycle_events (client_key, id);
