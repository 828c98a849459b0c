//! Logging and Prometheus metrics set-up.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::shutdown::Shutdown;

/// Installs the global log subscriber; `format` is "text" or "json". Safe to call twice.
pub fn init_tracing(format: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Latency buckets (seconds) fine enough for sub-millisecond HTTP answers and for handlers
/// that take seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The pipeline's end-to-end latency (webhook received to handler done): its target is
/// tens of milliseconds, so the buckets are close enough there for a quantile read from
/// them to be a measurement rather than a bucket bound.
pub const END_TO_END_METRIC: &str = "tributary_processor_end_to_end_seconds";
const END_TO_END_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175, 0.02, 0.025, 0.03,
    0.035, 0.04, 0.045, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.125, 0.15, 0.2, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Records per processor batch: how well batches gather (each costs two database round
/// trips whatever its size).
pub const BATCH_SIZE_METRIC: &str = "tributary_processor_batch_size_events";
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];

/// The process-wide Prometheus recorder. Installed once; later calls return the same handle,
/// so services started in one test process share it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                // A full name is matched before any suffix.
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(END_TO_END_METRIC.into()),
                        END_TO_END_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(BATCH_SIZE_METRIC.into()),
                        BATCH_SIZE_BUCKETS,
                    )
                })
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Histogram samples wait in a buffer until they are folded into buckets; without
            // upkeep that happens only at a scrape, so an unscraped service would grow
            // without bound.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(METRICS_UPKEEP);
                        upkeep.run_upkeep();
                    }
                });
            // Another recorder may already be installed (a test harness); ours still renders
            // whatever it recorded.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Serves `GET /metrics` on `listener` until `shutdown` fires.
pub async fn serve_metrics(listener: TcpListener, shutdown: Shutdown) -> std::io::Result<()> {
    let handle = metrics_handle();
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    let stop = shutdown.clone();
    let server =
        axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
    // A scraper holding a keep-alive connection must not hold the service's exit: after the
    // signal, open connections get a moment to finish, then the server is dropped.
    tokio::select! {
        served = server => served,
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(METRICS_DRAIN).await;
        } => Ok(()),
    }
}

/// How often buffered histogram samples are folded into their buckets.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// How long `/metrics` connections may stay open after the shutdown signal.
const METRICS_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Binds the metrics listener, naming the setting when the address is taken.
pub async fn bind_metrics(addr: &str) -> std::io::Result<TcpListener> {
    let addr: SocketAddr = addr.parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "bad metrics_listen address",
        )
    })?;
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on metrics_listen {addr}: {e}"),
        )
    })
}
