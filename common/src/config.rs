//! One typed configuration for every service.
//!
//! Layers, later wins: the commented defaults file built into the binaries
//! (`config.default.toml`), an optional `--config` file, then `TRIBUTARY_*` environment
//! variables. Every key must exist in the defaults file, and each value is checked against
//! the type of its default, so a typo or a wrong type fails at start with the setting's name.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::{Table, Value};

use crate::crypto::{KeyError, SecretKeyring};
use crate::hosts::HostAllowlist;
use crate::routing::{RouteError, TopicRouter};

/// The defaults file, also the documentation of every setting.
pub const DEFAULTS_TOML: &str = include_str!("../../config.default.toml");
const ENV_PREFIX: &str = "TRIBUTARY_";
/// How long Forge waits for a remote to answer an invocation before it counts as failed.
pub const FORGE_INVOCATION_TIMEOUT_MS: u64 = 5000;
/// More runtime threads than this is a typo, not a tuning.
const MAX_WORKER_THREADS: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read config file {path}: {message}")]
    File { path: String, message: String },
    #[error("unknown setting `{key}` in {origin}")]
    UnknownKey { key: String, origin: String },
    #[error("invalid setting `{key}` ({origin}): {message}")]
    Invalid {
        key: String,
        origin: String,
        message: String,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        origin: format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()),
        message: message.into(),
    }
}

/// A string setting that must never appear in logs or debug output.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<redacted>")
        }
    }
}

/// Every setting; `config.default.toml` documents each one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database_url: Redacted,
    pub database_max_connections: u32,
    pub database_connect_timeout_seconds: u64,
    pub kafka_brokers: String,
    pub kafka_client_properties: Vec<String>,

    pub app_key: String,
    pub app_name: String,
    pub app_description: String,
    pub app_base_url: String,
    pub app_region_base_urls: Vec<String>,
    pub app_extra_audiences: Vec<String>,
    pub app_scopes: Vec<String>,

    pub secret_key: Redacted,
    pub secret_key_file: String,
    pub secret_keys_previous: Vec<Redacted>,

    pub install_keys_url: Vec<String>,
    pub install_keys_timeout_ms: u64,
    pub install_keys_cache_size: u64,
    pub tenant_host_allowlist: Vec<String>,
    pub tenant_development_hosts: Vec<String>,
    pub jwt_leeway_seconds: u64,

    pub metrics_listen: String,
    pub log_format: String,
    pub shutdown_timeout_seconds: u64,

    pub ingest_listen: String,
    pub ingest_max_body_bytes: u64,
    pub ingest_max_in_flight: u64,
    pub ingest_publish_timeout_ms: u64,
    pub ingest_retry_after_seconds: u64,
    pub ingest_secret_cache_size: u64,
    pub ingest_secret_cache_ttl_seconds: u64,
    pub ingest_webhook_events: Vec<String>,
    pub ingest_allow_legacy_installs: bool,
    pub ingest_negative_cache_ttl_seconds: u64,
    pub ingest_tenant_reload_interval_ms: u64,
    pub ingest_lifecycle_max_body_bytes: u64,
    pub ingest_lifecycle_max_in_flight: u64,
    pub ingest_header_read_timeout_ms: u64,
    pub ingest_idle_timeout_seconds: u64,
    pub ingest_max_connections: u64,
    pub ingest_worker_threads: u64,
    pub events_topic: String,
    pub topic_routes: Vec<String>,

    pub processor_group_id: String,
    pub processor_topics: Vec<String>,
    pub processor_concurrency: u64,
    pub processor_batch_wait_ms: u64,
    pub processor_worker_threads: u64,
    pub processor_max_attempts: u64,
    pub processor_retry_initial_ms: u64,
    pub processor_retry_max_ms: u64,
    pub processor_park_after_ms: u64,
    pub processor_dlq_suffix: String,
    pub processor_guard_max_failure_ratio: f64,
    pub processor_guard_window: u64,
    pub processor_commit_interval_ms: u64,
    pub processor_handlers: Vec<String>,
    pub processor_tenant_cache_size: u64,
    pub processor_tenant_cache_ttl_seconds: u64,
    pub processor_handled_retention_hours: u64,

    pub confluence_connect_timeout_ms: u64,
    pub confluence_request_timeout_ms: u64,
    pub confluence_max_concurrency_per_tenant: u64,
    pub oauth_authorization_server_url: String,

    pub forge_app_id: String,
    pub forge_jwks_url: String,
    pub forge_staging_jwks_url: String,
    pub forge_jwks_refresh_interval_seconds: u64,
    pub forge_api_host_allowlist: Vec<String>,
    pub forge_retry_window_seconds: u64,
    pub forge_system_token_ttl_seconds: u64,
    pub forge_deadline_ms: u64,
    pub forge_events: Vec<String>,
    pub forge_scopes: Vec<String>,

    #[serde(skip)]
    parsed: Parsed,
}

/// Values derived from the raw settings during validation.
#[derive(Debug, Clone, Default)]
struct Parsed {
    keyring: Option<SecretKeyring>,
    allowlist: HostAllowlist,
    router: TopicRouter,
    regions: BTreeMap<String, String>,
    forge_api_hosts: HostAllowlist,
}

impl Config {
    /// Defaults, then `file`, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment (tests use this).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let defaults: Table = toml::from_str(DEFAULTS_TOML).map_err(|e| ConfigError::File {
            path: "config.default.toml".into(),
            message: e.to_string(),
        })?;
        let mut merged = defaults.clone();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            let table: Table = toml::from_str(&text).map_err(|e| ConfigError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            for (key, value) in table {
                let origin = path.display().to_string();
                let default = defaults.get(&key).ok_or_else(|| ConfigError::UnknownKey {
                    key: key.clone(),
                    origin: origin.clone(),
                })?;
                let value = coerce_file_value(&key, default, value, &origin)?;
                merged.insert(key, value);
            }
        }
        for (name, raw) in env {
            let Some(suffix) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = suffix.to_ascii_lowercase();
            let Some(default) = defaults.get(&key) else {
                // Not every TRIBUTARY_ variable is ours to judge (tests and tools use the
                // prefix too), so an unknown one is skipped rather than fatal.
                continue;
            };
            let value = parse_env_value(&key, default, &raw)?;
            merged.insert(key, value);
        }
        let mut config = Config::deserialize(Value::Table(merged))
            .map_err(|e| invalid("(config)", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Only the defaults (tests and tools build on this).
    pub fn defaults() -> Result<Config, ConfigError> {
        Self::load_from(None, std::iter::empty())
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        let url = |key: &str, value: &str| -> Result<url::Url, ConfigError> {
            let parsed = url::Url::parse(value)
                .map_err(|e| invalid(key, format!("`{value}` is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(invalid(
                    key,
                    format!("`{value}` must be an http(s) URL with a host"),
                ));
            }
            Ok(parsed)
        };
        if self.database_url.0.is_empty() {
            return Err(invalid("database_url", "must not be empty"));
        }
        if crate::store::Backend::of_url(&self.database_url.0).is_none() {
            return Err(invalid(
                "database_url",
                "must be a postgres:// or sqlite: URL",
            ));
        }
        if self.kafka_brokers.trim().is_empty() {
            return Err(invalid("kafka_brokers", "must name at least one host:port"));
        }
        for property in &self.kafka_client_properties {
            if !property.contains('=') {
                return Err(invalid(
                    "kafka_client_properties",
                    format!("`{property}` is not key=value"),
                ));
            }
        }
        if self.app_key.trim().is_empty() || self.app_key.len() > 64 {
            return Err(invalid("app_key", "must be 1 to 64 characters"));
        }
        url("app_base_url", &self.app_base_url)?;
        let mut regions = BTreeMap::new();
        for pair in &self.app_region_base_urls {
            let (realm, address) = pair.split_once('=').ok_or_else(|| {
                invalid("app_region_base_urls", format!("`{pair}` is not REALM=URL"))
            })?;
            url("app_region_base_urls", address.trim())?;
            regions.insert(
                realm.trim().to_ascii_uppercase(),
                address.trim().to_string(),
            );
        }
        for audience in &self.app_extra_audiences {
            url("app_extra_audiences", audience)?;
        }
        self.parsed.regions = regions;

        if self.secret_key.0.is_empty() && !self.secret_key_file.is_empty() {
            let text = std::fs::read_to_string(&self.secret_key_file).map_err(|e| {
                invalid(
                    "secret_key_file",
                    format!("cannot read `{}`: {e}", self.secret_key_file),
                )
            })?;
            self.secret_key = Redacted(text.trim().to_string());
            if self.secret_key.0.is_empty() {
                return Err(invalid(
                    "secret_key_file",
                    format!("`{}` is empty", self.secret_key_file),
                ));
            }
        }
        let keyring = if self.secret_key.0.is_empty() {
            if !self.secret_keys_previous.is_empty() {
                return Err(invalid(
                    "secret_key",
                    "is empty but secret_keys_previous is set",
                ));
            }
            None
        } else {
            let previous: Vec<&str> = self
                .secret_keys_previous
                .iter()
                .map(|k| k.0.as_str())
                .collect();
            Some(
                SecretKeyring::from_base64(&self.secret_key.0, &previous).map_err(|e| match e {
                    KeyError::Previous(_) => invalid("secret_keys_previous", e.to_string()),
                    _ => invalid("secret_key", e.to_string()),
                })?,
            )
        };
        self.parsed.keyring = keyring;

        if self.install_keys_url.is_empty() {
            return Err(invalid(
                "install_keys_url",
                "must name at least one key server",
            ));
        }
        for server in &self.install_keys_url {
            url("install_keys_url", server)?;
        }
        self.parsed.allowlist = HostAllowlist::new(&self.tenant_host_allowlist)
            .map_err(|e| invalid("tenant_host_allowlist", e))?
            .with_development_hosts(&self.tenant_development_hosts)
            .map_err(|e| invalid("tenant_development_hosts", e))?;
        for (key, value) in [
            ("metrics_listen", &self.metrics_listen),
            ("ingest_listen", &self.ingest_listen),
        ] {
            value
                .parse::<SocketAddr>()
                .map_err(|_| invalid(key, format!("`{value}` is not an IP:port address")))?;
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(invalid("log_format", "must be \"text\" or \"json\""));
        }
        for (key, value) in [
            ("ingest_max_body_bytes", self.ingest_max_body_bytes),
            ("ingest_max_in_flight", self.ingest_max_in_flight),
            (
                "ingest_lifecycle_max_body_bytes",
                self.ingest_lifecycle_max_body_bytes,
            ),
            (
                "ingest_lifecycle_max_in_flight",
                self.ingest_lifecycle_max_in_flight,
            ),
            (
                "ingest_header_read_timeout_ms",
                self.ingest_header_read_timeout_ms,
            ),
            (
                "ingest_idle_timeout_seconds",
                self.ingest_idle_timeout_seconds,
            ),
            ("ingest_max_connections", self.ingest_max_connections),
            ("ingest_publish_timeout_ms", self.ingest_publish_timeout_ms),
            ("install_keys_timeout_ms", self.install_keys_timeout_ms),
            ("processor_concurrency", self.processor_concurrency),
            ("processor_max_attempts", self.processor_max_attempts),
            ("processor_guard_window", self.processor_guard_window),
            (
                "processor_commit_interval_ms",
                self.processor_commit_interval_ms,
            ),
            (
                "processor_handled_retention_hours",
                self.processor_handled_retention_hours,
            ),
            (
                "confluence_max_concurrency_per_tenant",
                self.confluence_max_concurrency_per_tenant,
            ),
            (
                "database_max_connections",
                u64::from(self.database_max_connections),
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        for (key, value) in [
            ("ingest_worker_threads", self.ingest_worker_threads),
            ("processor_worker_threads", self.processor_worker_threads),
        ] {
            if value > MAX_WORKER_THREADS {
                return Err(invalid(
                    key,
                    format!("must be at most {MAX_WORKER_THREADS} (0 is one per core)"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.processor_guard_max_failure_ratio) {
            return Err(invalid(
                "processor_guard_max_failure_ratio",
                "must be between 0 and 1",
            ));
        }
        if self.processor_retry_initial_ms > self.processor_retry_max_ms {
            return Err(invalid(
                "processor_retry_initial_ms",
                "must not exceed processor_retry_max_ms",
            ));
        }
        if self.processor_topics.is_empty() {
            return Err(invalid("processor_topics", "must name at least one topic"));
        }
        if self.processor_dlq_suffix.is_empty() {
            return Err(invalid("processor_dlq_suffix", "must not be empty"));
        }
        self.parsed.router =
            TopicRouter::new(&self.events_topic, &self.topic_routes).map_err(|e| match e {
                RouteError::DefaultTopic(_) => invalid("events_topic", e.to_string()),
                _ => invalid("topic_routes", e.to_string()),
            })?;
        // Empty: each tenant's authorization server follows from its host.
        if !self.oauth_authorization_server_url.trim().is_empty() {
            url(
                "oauth_authorization_server_url",
                &self.oauth_authorization_server_url,
            )?;
        }
        self.validate_forge(url)?;
        Ok(())
    }

    fn validate_forge(
        &mut self,
        url: impl Fn(&str, &str) -> Result<url::Url, ConfigError>,
    ) -> Result<(), ConfigError> {
        let id = self.forge_app_id.trim();
        let uuid = id.strip_prefix("ari:cloud:ecosystem::app/").unwrap_or(id);
        if !id.is_empty() && uuid::Uuid::parse_str(uuid).is_err() {
            return Err(invalid(
                "forge_app_id",
                "must be the app's ARI (ari:cloud:ecosystem::app/<uuid>) or its UUID",
            ));
        }
        url("forge_jwks_url", &self.forge_jwks_url)?;
        url("forge_staging_jwks_url", &self.forge_staging_jwks_url)?;
        // The development hosts that tenant base URLs may use over http (loopback by
        // default) apply to the Forge API base URL too, for simulated gateways.
        self.parsed.forge_api_hosts = HostAllowlist::new(&self.forge_api_host_allowlist)
            .map_err(|e| invalid("forge_api_host_allowlist", e))?
            .with_development_hosts(&self.tenant_development_hosts)
            .map_err(|e| invalid("tenant_development_hosts", e))?;
        for event in &self.forge_events {
            if !crate::forge::is_forge_event_name(event) {
                return Err(invalid(
                    "forge_events",
                    format!("`{event}` is not a Forge event name (avi:...)"),
                ));
            }
        }
        // Forge gives up on a delivery after 5 s and retries it; an answer after that is
        // never seen, so the route must have answered (503 at worst) before then.
        if self.forge_deadline_ms == 0 || self.forge_deadline_ms >= FORGE_INVOCATION_TIMEOUT_MS {
            return Err(invalid(
                "forge_deadline_ms",
                format!(
                    "must be between 1 and {}: Forge waits {FORGE_INVOCATION_TIMEOUT_MS} ms for an answer",
                    FORGE_INVOCATION_TIMEOUT_MS - 1
                ),
            ));
        }
        if self.forge_retry_window_seconds == 0 || self.forge_system_token_ttl_seconds == 0 {
            return Err(invalid(
                "forge_retry_window_seconds",
                "and forge_system_token_ttl_seconds must be greater than 0",
            ));
        }
        Ok(())
    }

    /// True when a Forge app id is configured: the Forge route is served only then.
    pub fn forge_enabled(&self) -> bool {
        !self.forge_app_id.trim().is_empty()
    }

    /// The authorization server every user-token grant goes to, when one is configured;
    /// `None` leaves the choice to each tenant's host (production, staging, FedRAMP).
    pub fn oauth_authorization_server_override(&self) -> Option<&str> {
        Some(self.oauth_authorization_server_url.trim()).filter(|url| !url.is_empty())
    }

    /// Hosts a Forge installation's `apiBaseUrl` may name.
    pub fn forge_api_hosts(&self) -> &HostAllowlist {
        &self.parsed.forge_api_hosts
    }

    /// The keyring for secrets at rest, or an error naming the missing setting.
    pub fn secret_keyring(&self) -> Result<&SecretKeyring, ConfigError> {
        self.parsed.keyring.as_ref().ok_or_else(|| {
            invalid(
                "secret_key",
                "is required: base64 of 32 random bytes (openssl rand -base64 32)",
            )
        })
    }

    pub fn tenant_allowlist(&self) -> &HostAllowlist {
        &self.parsed.allowlist
    }

    pub fn topic_router(&self) -> &TopicRouter {
        &self.parsed.router
    }

    /// The dead-letter topic of `topic`, with this configuration's suffix.
    pub fn dead_letter_topic(&self, topic: &str) -> String {
        crate::routing::dead_letter_topic(topic, &self.processor_dlq_suffix)
    }

    /// Regional base URLs by realm (EU, US, ...).
    pub fn region_base_urls(&self) -> &BTreeMap<String, String> {
        &self.parsed.regions
    }

    /// Every URL a signed install may name as its audience.
    pub fn install_audiences(&self) -> Vec<String> {
        let mut audiences = vec![self.app_base_url.clone()];
        audiences.extend(self.parsed.regions.values().cloned());
        audiences.extend(self.app_extra_audiences.iter().cloned());
        audiences
    }

    /// The path of `app_base_url` (stripped before computing the qsh of inbound requests).
    pub fn app_base_path(&self) -> String {
        url::Url::parse(&self.app_base_url)
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default()
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_seconds)
    }
}

fn coerce_file_value(
    key: &str,
    default: &Value,
    value: Value,
    origin: &str,
) -> Result<Value, ConfigError> {
    let bad = |expected: &str| ConfigError::Invalid {
        key: key.to_string(),
        origin: origin.to_string(),
        message: format!("expected {expected}"),
    };
    match (default, value) {
        (Value::Integer(_), Value::Integer(v)) if v >= 0 => Ok(Value::Integer(v)),
        (Value::Integer(_), _) => Err(bad("a non-negative integer")),
        (Value::Float(_), Value::Float(v)) => Ok(Value::Float(v)),
        (Value::Float(_), Value::Integer(v)) => Ok(Value::Float(v as f64)),
        (Value::Float(_), _) => Err(bad("a number")),
        (Value::Boolean(_), Value::Boolean(v)) => Ok(Value::Boolean(v)),
        (Value::Boolean(_), _) => Err(bad("true or false")),
        (Value::String(_), Value::String(v)) => Ok(Value::String(v)),
        (Value::String(_), _) => Err(bad("a string")),
        (Value::Array(_), Value::Array(items)) if items.iter().all(Value::is_str) => {
            Ok(Value::Array(items))
        }
        (Value::Array(_), Value::String(v)) => Ok(split_list(&v)),
        (Value::Array(_), _) => Err(bad("a list of strings")),
        _ => Err(bad("a value of the default's type")),
    }
}

fn parse_env_value(key: &str, default: &Value, raw: &str) -> Result<Value, ConfigError> {
    let trimmed = raw.trim();
    match default {
        Value::Integer(_) => trimmed
            .parse::<u64>()
            .ok()
            .and_then(|v| i64::try_from(v).ok())
            .map(Value::Integer)
            .ok_or_else(|| invalid(key, format!("`{raw}` is not a non-negative integer"))),
        Value::Float(_) => trimmed
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Value::Float)
            .ok_or_else(|| invalid(key, format!("`{raw}` is not a number"))),
        Value::Boolean(_) => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Boolean(false)),
            _ => Err(invalid(key, format!("`{raw}` is not true or false"))),
        },
        Value::Array(_) => Ok(split_list(raw)),
        _ => Ok(Value::String(raw.to_string())),
    }
}

fn split_list(raw: &str) -> Value {
    Value::Array(
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.to_string()))
            .collect(),
    )
}

#[cfg(test)]
mod tests;
