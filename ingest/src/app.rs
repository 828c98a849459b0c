//! What every source's routes share, and the router that puts the sources together.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tributary_common::envelope::Envelope;
use tributary_common::routing::TopicRouter;
use tributary_common::shutdown::Shutdown;
use tributary_common::store::{ForgeStore, TenantStore};

use crate::publisher::Publisher;
use crate::rejection::Rejection;

/// The response header naming the id (`ce_id`) an accepted event travels under.
pub const EVENT_ID_HEADER: &str = "tributary-event-id";

/// The state every source shares.
pub struct AppState {
    /// Path of the app base URL: the routes are served under it as well as at the root.
    pub base_path: String,
    pub max_body: usize,
    /// Which Kafka topic an event goes to.
    pub topic_router: TopicRouter,
    pub store: TenantStore,
    /// Forge installations, linked to Connect tenants by Connect `installed`.
    pub forge: ForgeStore,
    pub publisher: Publisher,
    /// Fires when the service starts to stop; readiness turns false.
    pub stopping: Shutdown,
}

impl AppState {
    /// Publishes `envelope` to the topic its event routes to; returns once the broker has it.
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), Rejection> {
        self.publish_within(envelope, std::time::Duration::MAX)
            .await
    }

    /// As [`AppState::publish`], waiting for the broker at most `limit` (and never longer
    /// than the publish timeout).
    pub async fn publish_within(
        &self,
        envelope: &Envelope,
        limit: std::time::Duration,
    ) -> Result<(), Rejection> {
        self.publisher
            .publish_within(
                self.topic_router.topic_for(envelope.kind.name()),
                envelope,
                limit,
            )
            .await
            .map_err(|e| Rejection::BrokerUnavailable(e.to_string()))
    }
}

/// The answer to an event the broker has: 204, carrying the event's id.
pub fn accepted(envelope: &Envelope) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(id) = HeaderValue::from_str(&envelope.id) {
        // A name made from a `&str` is copied into a buffer of its own on every answer; one
        // from `from_static` is not.
        response
            .headers_mut()
            .insert(HeaderName::from_static(EVENT_ID_HEADER), id);
    }
    response
}

/// Every source's routes (each behind the edge layers already), the health routes and a
/// `not_found` answer for anything else. Served at the root and, when the app base URL has a
/// path, under that path as well, so it works behind a proxy that strips the prefix and one
/// that does not.
pub fn router(app: Arc<AppState>, sources: impl IntoIterator<Item = Router>) -> Router {
    let routes = sources
        .into_iter()
        .fold(Router::new(), Router::merge)
        .merge(
            Router::new()
                .route("/healthz", get(crate::health::healthz))
                .route("/readyz", get(crate::health::readyz))
                .with_state(app.clone()),
        )
        .fallback(|| async { Rejection::NotFound });
    if app.base_path.is_empty() {
        routes
    } else {
        Router::new()
            .nest(&app.base_path, routes.clone())
            .merge(routes)
    }
}
