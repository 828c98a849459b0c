//! The edge every Confluence-facing route goes through: the in-flight bound, request
//! metrics, and one log line per refusal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tributary_common::connect::LifecycleEventType;

use crate::descriptor::WebhookEvents;
use crate::rejection::{Refused, Rejection};

pub const REQUESTS_TOTAL: &str = "tributary_ingest_requests_total";
pub const REJECTED_TOTAL: &str = "tributary_ingest_rejected_total";
pub const REQUEST_DURATION_SECONDS: &str = "tributary_ingest_request_duration_seconds";
pub const BROKER_ACK_DURATION_SECONDS: &str = "tributary_ingest_broker_ack_duration_seconds";
pub const IN_FLIGHT_REQUESTS: &str = "tributary_ingest_in_flight_requests";
pub const EVENTS_PUBLISHED_TOTAL: &str = "tributary_ingest_events_published_total";

/// The `route` label: one value per route, never a raw path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Descriptor,
    Lifecycle(LifecycleEventType),
    Webhook,
}

impl Route {
    pub fn label(self) -> &'static str {
        match self {
            Route::Descriptor => "descriptor",
            Route::Lifecycle(kind) => kind.as_str(),
            Route::Webhook => "webhook",
        }
    }
}

pub fn broker_ack(elapsed: Duration) {
    metrics::histogram!(BROKER_ACK_DURATION_SECONDS).record(elapsed.as_secs_f64());
}

pub fn published(event: &str) {
    metrics::counter!(EVENTS_PUBLISHED_TOTAL, "event" => event.to_string()).increment(1);
}

/// What the edge layer of one route needs.
#[derive(Clone)]
pub struct Edge {
    pub route: Route,
    pub shared: Arc<EdgeShared>,
}

pub struct EdgeShared {
    pub in_flight: Arc<Semaphore>,
    pub events: Arc<WebhookEvents>,
    pub retry_after: HeaderValue,
}

/// Holds one in-flight slot; the gauge follows it even when a request is abandoned.
struct InFlight {
    _permit: OwnedSemaphorePermit,
}

impl InFlight {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!(IN_FLIGHT_REQUESTS).increment(1.0);
        InFlight { _permit: permit }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT_REQUESTS).decrement(1.0);
    }
}

pub async fn edge(State(edge): State<Edge>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let event = event_label(&edge, request.uri().path());
    let response = match edge.shared.in_flight.clone().try_acquire_owned() {
        Ok(permit) => {
            let _slot = InFlight::new(permit);
            next.run(request).await
        }
        Err(_) => Rejection::Overloaded.into_response(),
    };
    finish(&edge, event, response, started)
}

fn event_label(edge: &Edge, path: &str) -> String {
    match edge.route {
        Route::Descriptor => "none".to_string(),
        Route::Lifecycle(kind) => kind.as_str().to_string(),
        Route::Webhook => {
            let name = path.rsplit('/').next().unwrap_or_default();
            if edge.shared.events.contains(name) {
                name.to_string()
            } else {
                "unknown".to_string()
            }
        }
    }
}

fn finish(edge: &Edge, event: String, mut response: Response, started: Instant) -> Response {
    let status = response.status();
    let outcome = match status {
        s if s.is_success() => "accepted",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "rejected",
        _ => "error",
    };
    let route = edge.route.label();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, edge.shared.retry_after.clone());
    }
    if let Some(refused) = response.extensions().get::<Refused>() {
        metrics::counter!(REJECTED_TOTAL, "reason" => refused.code).increment(1);
        if status.is_server_error() {
            tracing::warn!(route, event = %event, status = status.as_u16(), code = refused.code, detail = %refused.detail, "request not accepted");
        } else {
            tracing::info!(route, event = %event, status = status.as_u16(), code = refused.code, detail = %refused.detail, "request refused");
        }
    }
    metrics::counter!(REQUESTS_TOTAL, "route" => route, "event" => event, "outcome" => outcome)
        .increment(1);
    metrics::histogram!(REQUEST_DURATION_SECONDS, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
