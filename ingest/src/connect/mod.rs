//! Atlassian Connect as an event source: the descriptor Confluence installs the app from, the
//! lifecycle callbacks that install and change tenants, the webhooks, and the tenant secrets
//! that authenticate them.

pub mod descriptor;
pub mod lifecycle;
pub mod secrets;
pub mod webhook;

use std::borrow::Cow;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use bytes::Bytes;
use tributary_common::connect::{InstallVerifier, LifecycleEventType, extract_token};
use tributary_common::hosts::HostAllowlist;

use crate::app::AppState;
use crate::body::request_query;
use crate::observe::{EdgeLayers, EventLabel, RouteLabels};
use descriptor::{DESCRIPTOR_PATH, WEBHOOK_ROUTE, WebhookEvents, lifecycle_path, webhook_path};
use secrets::TenantSecrets;
use webhook::{DirectWebhooks, WebhookPaths};

/// What the Connect routes need besides the shared state.
pub struct ConnectState {
    pub app: Arc<AppState>,
    pub app_key: String,
    pub allow_legacy_installs: bool,
    /// Largest lifecycle body read; they are a few KB.
    pub lifecycle_max_body: usize,
    /// Hosts tenants may live on: an install's `baseUrl` must be one of them.
    pub allowlist: HostAllowlist,
    pub events: Arc<WebhookEvents>,
    /// The descriptor, rendered once.
    pub descriptor: Bytes,
    pub secrets: TenantSecrets,
    pub installs: InstallVerifier,
}

/// The descriptor, lifecycle and webhook routes, each behind the edge; lifecycle routes
/// behind `lifecycle_edge`, a pool of slots of their own. The subscribed events' webhook
/// routes are also returned to be served ahead of the router (see [`DirectWebhooks`]).
pub fn router(
    state: Arc<ConnectState>,
    edge: &EdgeLayers,
    lifecycle_edge: &EdgeLayers,
) -> (Router, DirectWebhooks) {
    let events = state.events.clone();
    let webhook_edge = edge.route(RouteLabels {
        route: "webhook",
        event: EventLabel::LastSegment(Arc::new(move |name| events.contains(name))),
    });
    let direct = DirectWebhooks {
        connect: state.clone(),
        edge: webhook_edge.clone(),
        paths: WebhookPaths::new(state.events.iter(), &state.app.base_path),
    };
    let mut routes = Router::new()
        .route(
            DESCRIPTOR_PATH,
            edge.wrap(
                get(serve_descriptor),
                RouteLabels::fixed("descriptor", "none"),
            ),
        )
        .route(WEBHOOK_ROUTE, webhook_edge.wrap(post(webhook::webhook)));
    // Each subscribed event also has a route of its own, which the router prefers to the
    // parameter route: a webhook then costs no path parameter (its percent-decoding, its
    // allocations, its extraction). Any other path under `/webhooks/` (an unknown event,
    // one spelled with percent-escapes) still goes to the parameter route and gets its
    // answer there.
    for name in state.events.iter() {
        // Shared, not owned: the router clones a route's handler, and what it captures, for
        // every request it routes there.
        let event: Arc<str> = Arc::from(name);
        routes = routes.route(
            &webhook_path(name),
            webhook_edge.wrap(post(move |State(state), request| {
                webhook::webhook_named(state, event.clone(), request)
            })),
        );
    }
    for kind in LifecycleEventType::ALL {
        routes = routes.route(
            &lifecycle_path(kind),
            lifecycle_edge.wrap(
                post(move |state, request| lifecycle::lifecycle(kind, state, request)),
                RouteLabels::fixed(kind.as_str(), kind.as_str()),
            ),
        );
    }
    (routes.with_state(state), direct)
}

async fn serve_descriptor(State(state): State<Arc<ConnectState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.descriptor.clone(),
    )
}

/// The token from `Authorization: JWT ...` or the `jwt` query parameter, borrowed from the
/// request unless the query had to be decoded.
pub fn token_of(parts: &Parts) -> Option<Cow<'_, str>> {
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    extract_token(authorization, request_query(parts)).filter(|token| !token.is_empty())
}
