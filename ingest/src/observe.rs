//! The edge every source's routes go through: the in-flight bound, request metrics, and one
//! log line per refusal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use std::convert::Infallible;
use std::future::Future;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use futures::future::BoxFuture;
use metrics::{Counter, Gauge, Histogram};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

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

    fn event<'a>(&self, path: &'a str) -> &'a str
    where
        Self: 'a,
    {
        match &self.event {
            EventLabel::Fixed(event) => event,
            EventLabel::LastSegment(known) => {
                let name = path.rsplit('/').next().unwrap_or_default();
                if known(name) { name } else { "unknown" }
            }
        }
    }
}

/// Metric handles registered on first use and kept: looking a handle up builds and hashes
/// its key (and copies its labels) every time, which a request should not pay for. Each
/// series still appears when it is first recorded, as before.
pub struct Lazy<T>(OnceLock<T>);

impl<T> Default for Lazy<T> {
    fn default() -> Self {
        Lazy(OnceLock::new())
    }
}

impl<T> Lazy<T> {
    pub fn get(&self, register: impl FnOnce() -> T) -> &T {
        self.0.get_or_init(register)
    }
}

/// One `event` label value of a route and its request counters, one per outcome.
struct EventMetrics {
    name: String,
    requests: [Lazy<Counter>; OUTCOMES.len()],
}

const OUTCOMES: [&str; 4] = ["accepted", "unavailable", "rejected", "error"];

/// The handles of one route. The `event` values are bounded by [`EventLabel`], so the map is.
#[derive(Default)]
struct RouteMetrics {
    duration: Lazy<Histogram>,
    events: Mutex<HashMap<String, Arc<EventMetrics>>>,
}

impl RouteMetrics {
    fn event(&self, name: &str) -> Arc<EventMetrics> {
        let Ok(mut events) = self.events.lock() else {
            return Arc::new(EventMetrics::new(name));
        };
        if let Some(event) = events.get(name) {
            return event.clone();
        }
        let event = Arc::new(EventMetrics::new(name));
        events.insert(name.to_string(), event.clone());
        event
    }
}

impl EventMetrics {
    fn new(name: &str) -> Self {
        EventMetrics {
            name: name.to_string(),
            requests: Default::default(),
        }
    }
}

/// The edge shared by every route of every source: one in-flight bound for the whole
/// service, one `Retry-After` for every 503.
#[derive(Clone)]
pub struct EdgeLayers {
    shared: Arc<EdgeShared>,
}

struct EdgeShared {
    in_flight: Arc<Semaphore>,
    in_flight_gauge: Lazy<Gauge>,
    retry_after: HeaderValue,
}

impl EdgeLayers {
    pub fn new(max_in_flight: usize, retry_after_seconds: u64) -> Self {
        EdgeLayers {
            shared: Arc::new(EdgeShared {
                in_flight: Arc::new(Semaphore::new(max_in_flight)),
                in_flight_gauge: Lazy::default(),
                retry_after: HeaderValue::from(retry_after_seconds),
            }),
        }
    }

    /// `route` behind the edge, its requests counted and logged under `labels`.
    pub fn wrap<S>(&self, route: MethodRouter<S>, labels: RouteLabels) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        self.route(labels).wrap(route)
    }

    /// The edge of one route, for routes that share their labels and for a route served
    /// outside the router ([`crate::server::DirectRoutes`]).
    pub fn route(&self, labels: RouteLabels) -> RouteEdge {
        RouteEdge(Arc::new(Edge {
            labels,
            shared: self.shared.clone(),
            metrics: Arc::default(),
        }))
    }
}

/// One route's edge: the shared in-flight bound and the route's metrics and refusal log.
#[derive(Clone)]
pub struct RouteEdge(Arc<Edge>);

impl RouteEdge {
    /// `route` behind this edge.
    pub fn wrap<S>(&self, route: MethodRouter<S>) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        route.route_layer(EdgeLayer(self.clone()))
    }

    /// Answers `request` with `handler` behind this edge; a wrapped route's requests come
    /// here too.
    pub async fn serve<F, R>(
        &self,
        request: Request,
        handler: impl FnOnce(Request) -> F,
    ) -> Response
    where
        F: Future<Output = R>,
        R: IntoResponse,
    {
        let edge = &*self.0;
        let started = Instant::now();
        let event = edge.metrics.event(edge.labels.event(request.uri().path()));
        let response = match edge.shared.in_flight.clone().try_acquire_owned() {
            Ok(permit) => {
                let _slot = InFlight::new(permit, &edge.shared.in_flight_gauge);
                handler(request).await.into_response()
            }
            Err(_) => Rejection::Overloaded.into_response(),
        };
        finish(edge, &event, response, started)
    }
}

/// What the edge layer of one route needs.
struct Edge {
    labels: RouteLabels,
    shared: Arc<EdgeShared>,
    metrics: Arc<RouteMetrics>,
}

/// The edge as a service of its own rather than a `from_fn` middleware, which per request
/// clones its state twice, takes the request apart and back together for its extractors,
/// and boxes the rest of the stack once more.
#[derive(Clone)]
struct EdgeLayer(RouteEdge);

impl<I> Layer<I> for EdgeLayer {
    type Service = EdgeService<I>;

    fn layer(&self, inner: I) -> EdgeService<I> {
        EdgeService {
            edge: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
struct EdgeService<I> {
    edge: RouteEdge,
    inner: I,
}

impl<I> Service<Request> for EdgeService<I>
where
    I: Service<Request, Error = Infallible> + Clone + Send + 'static,
    I::Response: IntoResponse,
    I::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The clone left behind has not been polled ready; the one that has serves this call.
        let not_ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, not_ready);
        let edge = self.edge.clone();
        Box::pin(async move { Ok(edge.serve(request, |request| inner.call(request)).await) })
    }
}

/// Holds one in-flight slot; the gauge follows it even when a request is abandoned.
struct InFlight {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl InFlight {
    fn new(permit: OwnedSemaphorePermit, gauge: &Lazy<Gauge>) -> Self {
        let gauge = gauge.get(|| metrics::gauge!(IN_FLIGHT_REQUESTS)).clone();
        gauge.increment(1.0);
        InFlight {
            _permit: permit,
            gauge,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

fn finish(
    edge: &Edge,
    event_metrics: &EventMetrics,
    mut response: Response,
    started: Instant,
) -> Response {
    let status = response.status();
    let outcome_index = match status {
        s if s.is_success() => 0,
        StatusCode::SERVICE_UNAVAILABLE => 1,
        s if s.is_client_error() => 2,
        _ => 3,
    };
    let outcome = OUTCOMES[outcome_index];
    let event = &event_metrics.name;
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
    event_metrics.requests[outcome_index]
        .get(|| {
            metrics::counter!(REQUESTS_TOTAL, "route" => route, "event" => event.clone(), "outcome" => outcome)
        })
        .increment(1);
    edge.metrics
        .duration
        .get(|| metrics::histogram!(REQUEST_DURATION_SECONDS, "route" => route))
        .record(started.elapsed().as_secs_f64());
    response
}
