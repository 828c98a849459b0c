//! The edge every source's routes go through: the in-flight bound, request metrics, and one
//! log line per refusal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::rejection::{Refused, Rejection};

pub const REQUESTS_TOTAL: &str = "tributary_ingest_requests_total";
pub const REJECTED_TOTAL: &str = "tributary_ingest_rejected_total";
pub const REQUEST_DURATION_SECONDS: &str = "tributary_ingest_request_duration_seconds";
pub const BROKER_ACK_DURATION_SECONDS: &str = "tributary_ingest_broker_ack_duration_seconds";
pub const IN_FLIGHT_REQUESTS: &str = "tributary_ingest_in_flight_requests";
pub const EVENTS_PUBLISHED_TOTAL: &str = "tributary_ingest_events_published_total";

/// How a route's requests are labelled in metrics and logs: fixed values, never a raw path.
#[derive(Clone)]
pub struct RouteLabels {
    /// The `route` label: one value per route.
    pub route: &'static str,
    pub event: EventLabel,
}

/// Where the `event` label of a request comes from.
#[derive(Clone)]
pub enum EventLabel {
    /// The same for every request of the route (`none`, a lifecycle event).
    Fixed(&'static str),
    /// The last path segment when `known` accepts it, else `unknown`: a path names the event,
    /// and only the events the source subscribes to may become label values.
    LastSegment(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl RouteLabels {
    pub fn fixed(route: &'static str, event: &'static str) -> Self {
        RouteLabels {
            route,
            event: EventLabel::Fixed(event),
        }
    }

    fn event(&self, path: &str) -> String {
        match &self.event {
            EventLabel::Fixed(event) => event.to_string(),
            EventLabel::LastSegment(known) => {
                let name = path.rsplit('/').next().unwrap_or_default();
                if known(name) {
                    name.to_string()
                } else {
                    "unknown".to_string()
                }
            }
        }
    }
}

pub fn broker_ack(elapsed: Duration) {
    metrics::histogram!(BROKER_ACK_DURATION_SECONDS).record(elapsed.as_secs_f64());
}

pub fn published(event: &str) {
    metrics::counter!(EVENTS_PUBLISHED_TOTAL, "event" => event.to_string()).increment(1);
}

/// The edge shared by every route of every source: one in-flight bound for the whole
/// service, one `Retry-After` for every 503.
#[derive(Clone)]
pub struct EdgeLayers {
    shared: Arc<EdgeShared>,
}

struct EdgeShared {
    in_flight: Arc<Semaphore>,
    retry_after: HeaderValue,
}

impl EdgeLayers {
    pub fn new(max_in_flight: usize, retry_after_seconds: u64) -> Self {
        EdgeLayers {
            shared: Arc::new(EdgeShared {
                in_flight: Arc::new(Semaphore::new(max_in_flight)),
                retry_after: HeaderValue::from(retry_after_seconds),
            }),
        }
    }

    /// `route` behind the edge, its requests counted and logged under `labels`.
    pub fn wrap<S>(&self, route: MethodRouter<S>, labels: RouteLabels) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        route.route_layer(from_fn_with_state(
            Edge {
                labels,
                shared: self.shared.clone(),
            },
            edge,
        ))
    }
}

/// What the edge layer of one route needs.
#[derive(Clone)]
struct Edge {
    labels: RouteLabels,
    shared: Arc<EdgeShared>,
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

async fn edge(State(edge): State<Edge>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let event = edge.labels.event(request.uri().path());
    let response = match edge.shared.in_flight.clone().try_acquire_owned() {
        Ok(permit) => {
            let _slot = InFlight::new(permit);
            next.run(request).await
        }
        Err(_) => Rejection::Overloaded.into_response(),
    };
    finish(&edge, event, response, started)
}

fn finish(edge: &Edge, event: String, mut response: Response, started: Instant) -> Response {
    let status = response.status();
    let outcome = match status {
        s if s.is_success() => "accepted",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "rejected",
        _ => "error",
    };
    let route = edge.labels.route;
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
