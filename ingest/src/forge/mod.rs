//! Forge Remote as an event source: `POST /forge/events` takes every Forge trigger
//! delivery, product and lifecycle, authenticated by its Forge Invocation Token.

pub mod events;
pub mod manifest;
pub mod refusal;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use tributary_common::Config;
use tributary_common::forge::{ForgeVerifier, JwksProvider};
use tributary_common::store::ForgeStore;

use crate::app::AppState;
use crate::connect::secrets::TenantSecrets;
use crate::observe::{EdgeLayers, RouteLabels};

/// Where Forge delivers events (the manifest's endpoint `route.path`).
pub const EVENTS_PATH: &str = "/forge/events";
/// How long one JWKS fetch may take: well inside Forge's 5 s invocation timeout.
const JWKS_TIMEOUT: Duration = Duration::from_secs(2);

/// What the Forge route needs besides the shared state.
pub struct ForgeState {
    pub app: Arc<AppState>,
    pub verifier: ForgeVerifier,
    pub store: ForgeStore,
    /// The Connect routes' tenant cache: a Forge lifecycle event that changes a linked
    /// Connect tenant's status must reach it at once, as Connect's own callbacks do.
    pub connect_tenants: TenantSecrets,
    /// How far back a retried delivery's original is looked for.
    pub retry_window: Duration,
    /// How long a system token is used when it does not carry its own expiry.
    pub token_ttl: Duration,
    /// How long a delivery may take in all before it is answered, below Forge's 5 s.
    pub deadline: Duration,
}

impl ForgeState {
    /// The Forge source, or `None` when no Forge app id is configured (the route is off).
    pub fn from_config(
        config: &Config,
        app: Arc<AppState>,
        store: ForgeStore,
        connect_tenants: TenantSecrets,
    ) -> Option<Self> {
        if !config.forge_enabled() {
            return None;
        }
        let refresh = Duration::from_secs(config.forge_jwks_refresh_interval_seconds);
        Some(ForgeState {
            app,
            verifier: ForgeVerifier::new(
                &config.forge_app_id,
                JwksProvider::new(&config.forge_jwks_url, JWKS_TIMEOUT, refresh),
                JwksProvider::new(&config.forge_staging_jwks_url, JWKS_TIMEOUT, refresh),
                config.forge_api_hosts().clone(),
                config.jwt_leeway_seconds,
            ),
            store,
            connect_tenants,
            retry_window: Duration::from_secs(config.forge_retry_window_seconds),
            token_ttl: Duration::from_secs(config.forge_system_token_ttl_seconds),
            deadline: Duration::from_millis(config.forge_deadline_ms),
        })
    }
}

/// The Forge events route, behind the edge.
pub fn router(state: Arc<ForgeState>, edge: &EdgeLayers) -> Router {
    Router::new()
        .route(
            EVENTS_PATH,
            edge.wrap(post(events::deliver), RouteLabels::fixed("forge", "forge")),
        )
        .with_state(state)
}
