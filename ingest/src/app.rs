//! The shared state of the HTTP edge and the router built on it.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use bytes::Bytes;
use tokio::sync::Semaphore;
use tributary_common::connect::{InstallVerifier, LifecycleEventType};
use tributary_common::hosts::HostAllowlist;
use tributary_common::routing::TopicRouter;
use tributary_common::shutdown::Shutdown;
use tributary_common::store::TenantStore;

use crate::descriptor::{DESCRIPTOR_PATH, WEBHOOK_ROUTE, WebhookEvents, lifecycle_path};
use crate::observe::{Edge, EdgeShared, Route, edge};
use crate::publisher::Publisher;
use crate::rejection::Rejection;
use crate::secrets::TenantSecrets;

pub struct AppState {
    pub app_key: String,
    /// Path of the app base URL, stripped before computing a request's qsh.
    pub base_path: String,
    pub max_body: usize,
    pub allow_legacy_installs: bool,
    pub router: TopicRouter,
    pub allowlist: HostAllowlist,
    pub events: Arc<WebhookEvents>,
    /// The descriptor, rendered once.
    pub descriptor: Bytes,
    pub store: TenantStore,
    pub secrets: TenantSecrets,
    pub installs: InstallVerifier,
    pub publisher: Publisher,
    /// Fires when the service starts to stop; readiness turns false.
    pub stopping: Shutdown,
}

/// Every route. Served at the root and, when the app base URL has a path, under that path as
/// well, so it works behind a proxy that strips the prefix and one that does not.
pub fn router(state: Arc<AppState>, max_in_flight: usize, retry_after_seconds: u64) -> Router {
    let shared = Arc::new(EdgeShared {
        in_flight: Arc::new(Semaphore::new(max_in_flight)),
        events: state.events.clone(),
        retry_after: HeaderValue::from(retry_after_seconds),
    });
    let at_edge = |route: Route| {
        from_fn_with_state(
            Edge {
                route,
                shared: shared.clone(),
            },
            edge,
        )
    };
    let mut routes = Router::new()
        .route(
            DESCRIPTOR_PATH,
            get(serve_descriptor).route_layer(at_edge(Route::Descriptor)),
        )
        .route(
            WEBHOOK_ROUTE,
            post(crate::webhook::webhook).route_layer(at_edge(Route::Webhook)),
        );
    for kind in LifecycleEventType::ALL {
        routes = routes.route(
            &lifecycle_path(kind),
            post(move |state, request| crate::lifecycle::lifecycle(kind, state, request))
                .route_layer(at_edge(Route::Lifecycle(kind))),
        );
    }
    let routes = routes
        .route("/healthz", get(crate::health::healthz))
        .route("/readyz", get(crate::health::readyz))
        .fallback(|| async { Rejection::NotFound });
    let base_path = state.base_path.clone();
    let routes = routes.with_state(state);
    if base_path.is_empty() {
        routes
    } else {
        Router::new().nest(&base_path, routes.clone()).merge(routes)
    }
}

async fn serve_descriptor(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.descriptor.clone(),
    )
}
