-- Forge installations: a tenant's Forge identity beside its Connect one. One row per site
-- (cloud_id) once Forge has delivered to it; a row made from a Connect `installed` that
-- named its Forge installation has no cloud_id until Forge's first delivery.
CREATE TABLE forge_installations (
    id BIGSERIAL PRIMARY KEY,
    -- The site; stable across reinstalls, unlike the installation id.
    cloud_id TEXT UNIQUE,
    -- The latest installation ARI seen for the site (it may change on reinstall).
    installation_id TEXT NOT NULL UNIQUE,
    -- The Kafka key and tenant identity: the Connect clientKey once linked, otherwise
    -- the site ARI (ari:cloud:confluence::site/<cloudId>).
    tenant_key TEXT NOT NULL,
    api_base_url TEXT,
    app_id TEXT,
    environment_type TEXT,
    status TEXT NOT NULL CHECK (status IN ('installed', 'uninstalled')),
    -- The app system token, AES-256-GCM encrypted like shared secrets, bound to
    -- installation_id; never stored in plain text.
    token_key_id TEXT,
    token_nonce BYTEA,
    token_ciphertext BYTEA,
    -- When the token stops being used, Unix seconds.
    token_expires_at BIGINT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX forge_installations_tenant_idx ON forge_installations (tenant_key);

-- Recent Forge deliveries, so that a retried one (with retryContext) keeps the event id of
-- the delivery it repeats. Rows live for the retry window and are pruned after it.
CREATE TABLE forge_deliveries (
    id BIGSERIAL PRIMARY KEY,
    installation_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    event_id TEXT NOT NULL,
    -- Unix milliseconds, set by the ingest (one clock for both backends' comparisons).
    received_at_ms BIGINT NOT NULL
);

CREATE INDEX forge_deliveries_lookup_idx ON forge_deliveries (installation_id, content_hash, id);
CREATE INDEX forge_deliveries_received_idx ON forge_deliveries (received_at_ms);
