//! The HTTP edge event sources call, publishing what they send to Kafka and acknowledging
//! only once the broker has the event.
//!
//! The generic edge (shared state, body limits, refusals, the publisher, health, metrics)
//! sits at the top; each source has a folder of its own with its routes and what
//! authenticates them: `connect/` for Atlassian Connect (descriptor, lifecycle, webhooks,
//! tenant secrets), `forge/` for Forge Remote deliveries. [`app::router`] puts the sources'
//! routers together.
//!
//! [`run`] is the whole service; `main.rs` only parses the command line around it, and tests
//! start it in-process with listeners of their own.

pub mod app;
pub mod body;
pub mod connect;
pub mod delivery;
pub mod forge;
pub mod health;
pub mod kafka_log;
pub mod observe;
pub mod publisher;
pub mod rejection;
pub mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tributary_common::Config;
use tributary_common::config::ConfigError;
use tributary_common::connect::{InstallKeyProvider, InstallVerifier};
use tributary_common::shutdown::Shutdown;
use tributary_common::store::{self, ForgeStore, TenantStore};
use tributary_common::telemetry;

use crate::app::AppState;
use crate::connect::ConnectState;
use crate::connect::descriptor::{InvalidEventName, WebhookEvents, descriptor};
use crate::connect::secrets::TenantSecrets;
use crate::observe::EdgeLayers;
use crate::publisher::Publisher;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Events(#[from] InvalidEventName),
    #[error("cannot reach the database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot apply database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the Kafka producer: {0}")]
    Kafka(#[from] crate::delivery::ProducerSetupError),
    #[error("the HTTP server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// Serves the ingest on `listener` and metrics on `metrics_listener` until `shutdown` fires,
/// then stops accepting, lets requests in flight finish, flushes the producer and returns.
/// The whole stop is bounded by `shutdown_timeout_seconds`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    metrics_listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), IngestError> {
    // Installed before anything records, so no early sample is lost.
    telemetry::metrics_handle();
    let events = Arc::new(WebhookEvents::from_config(&config)?);
    let keyring = config.secret_keyring()?.clone();
    let db = store::connect(&config).await?;
    store::migrate(&db).await?;
    let tenants = TenantStore::new(db.clone(), keyring.clone());
    let forge_store = ForgeStore::new(db.clone(), keyring);
    let publisher = Publisher::new(&config)?;
    let keys = InstallKeyProvider::new(
        config.install_keys_url.clone(),
        Duration::from_millis(config.install_keys_timeout_ms),
        config.install_keys_cache_size,
    )
    .with_unknown_kid_ttl(Duration::from_secs(
        config.ingest_negative_cache_ttl_seconds,
    ));
    let app = Arc::new(AppState {
        base_path: config.app_base_path(),
        max_body: usize::try_from(config.ingest_max_body_bytes).unwrap_or(usize::MAX),
        topic_router: config.topic_router().clone(),
        store: tenants.clone(),
        forge: forge_store.clone(),
        publisher: publisher.clone(),
        stopping: shutdown.clone(),
    });
    let secrets = TenantSecrets::new(
        tenants.clone(),
        config.ingest_secret_cache_size,
        Duration::from_secs(config.ingest_secret_cache_ttl_seconds),
        config.jwt_leeway_seconds,
    )
    .with_negative_caching(
        Duration::from_secs(config.ingest_negative_cache_ttl_seconds),
        Duration::from_millis(config.ingest_tenant_reload_interval_ms),
    );
    let follower = tokio::spawn(
        secrets
            .clone()
            .follow_changes(tenants.change_feed(), shutdown.clone()),
    );
    let connect = Arc::new(ConnectState {
        app: app.clone(),
        app_key: config.app_key.clone(),
        allow_legacy_installs: config.ingest_allow_legacy_installs,
        lifecycle_max_body: usize::try_from(config.ingest_lifecycle_max_body_bytes)
            .unwrap_or(usize::MAX),
        allowlist: config.tenant_allowlist().clone(),
        descriptor: serde_json::to_vec(&descriptor(&config, &events))
            .unwrap_or_default()
            .into(),
        events,
        secrets,
        installs: InstallVerifier::new(keys, config.install_audiences(), config.jwt_leeway_seconds),
    });
    let edge = EdgeLayers::new(
        usize::try_from(config.ingest_max_in_flight).unwrap_or(usize::MAX),
        config.ingest_retry_after_seconds,
    );
    // Lifecycle callbacks get slots of their own: however many a stranger opens, the
    // webhooks' slots stay free.
    let lifecycle_edge = EdgeLayers::new(
        usize::try_from(config.ingest_lifecycle_max_in_flight).unwrap_or(usize::MAX),
        config.ingest_retry_after_seconds,
    );
    let connect_tenants = connect.secrets.clone();
    let (connect_routes, direct_webhooks) = connect::router(connect, &edge, &lifecycle_edge);
    let mut sources = vec![connect_routes];
    if let Some(state) =
        forge::ForgeState::from_config(&config, app.clone(), forge_store, connect_tenants)
    {
        sources.push(forge::router(Arc::new(state), &edge));
    }
    let routes = server::Routes {
        router: app::router(app, sources),
        direct: Some(Arc::new(direct_webhooks)),
    };
    let limits = server::ServerLimits {
        header_read_timeout: Duration::from_millis(config.ingest_header_read_timeout_ms),
        idle_timeout: Duration::from_secs(config.ingest_idle_timeout_seconds),
        max_connections: usize::try_from(config.ingest_max_connections).unwrap_or(usize::MAX),
    };
    tracing::info!(
        address = %listener.local_addr()?,
        metrics = %metrics_listener.local_addr()?,
        "ingest listening"
    );

    let metrics = tokio::spawn(telemetry::serve_metrics(metrics_listener, shutdown.clone()));
    let stop = shutdown.clone();
    let mut server = tokio::spawn(server::serve(listener, routes, limits, stop));
    let served = tokio::select! {
        served = &mut server => served,
        _ = shutdown.cancelled() => {
            let deadline = Instant::now() + config.shutdown_timeout();
            tracing::info!("stopping: no new connections, finishing requests in flight");
            match tokio::time::timeout_at(deadline.into(), &mut server).await {
                Ok(served) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if let Err(err) = publisher.flush(left).await {
                        tracing::warn!(error = %err, "the producer did not flush in time");
                    }
                    served
                }
                Err(_) => {
                    tracing::warn!("requests still in flight at the shutdown deadline");
                    server.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    shutdown.cancel();
    let _ = metrics.await;
    let _ = follower.await;
    db.close().await;
    match served {
        Ok(result) => result.map_err(IngestError::from),
        // The server task does not panic; an abort at the deadline is handled above.
        Err(_) => Ok(()),
    }
}
