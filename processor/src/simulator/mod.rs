//! A simulated Confluence Cloud: the REST API an app calls back, for local development and
//! end-to-end tests.
//!
//! Every tenant's site is served under one base path (`/wiki`) on one listener; the tenant
//! of a request is the clientKey its token names in `aud`. Each request is checked as
//! Confluence checks it (HS256 with that tenant's shared secret, `iss` the app key, `aud`
//! `[clientKey]`, a qsh recomputed from the request as received, `exp` and `iat`), recorded,
//! and answered with realistic JSON for the calls the client's typed helpers make. It can be
//! told to misbehave: answer 429 or 503 with `Retry-After`, or hang, for the next N requests
//! or for a while.

mod auth;
mod faults;
mod site;

pub use faults::{Fault, FaultSpan};

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::net::TcpListener;
use tributary_common::connect::SharedSecret;
use tributary_common::shutdown::Shutdown;

use faults::FaultPlan;
use site::Sites;

/// The base path Confluence Cloud serves a site under.
pub const BASE_PATH: &str = "/wiki";

/// Largest request body the simulator reads.
const MAX_BODY_BYTES: usize = 1 << 20;

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimulatorSettings {
    /// The app key tokens must name as `iss`.
    pub app_key: String,
    /// Clock skew accepted on `exp` and `iat`.
    pub leeway_seconds: u64,
    /// How many calls the log keeps (the oldest go first); counters keep counting.
    pub max_recorded_calls: usize,
}

impl SimulatorSettings {
    pub fn new(app_key: impl Into<String>) -> SimulatorSettings {
        SimulatorSettings {
            app_key: app_key.into(),
            leeway_seconds: 30,
            max_recorded_calls: 100_000,
        }
    }
}

/// What the simulator made of a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Refused(String),
}

impl Verdict {
    pub fn is_accepted(&self) -> bool {
        matches!(self, Verdict::Accepted)
    }
}

/// One request as the simulator received it.
#[derive(Debug, Clone)]
pub struct Call {
    /// Position in arrival order, from 0.
    pub seq: u64,
    pub method: String,
    /// Path and query exactly as received, base path included.
    pub target: String,
    /// The tenant the token named, when it named one.
    pub client_key: Option<String>,
    pub verdict: Verdict,
    /// The status answered (0 for a request held until the client gave up).
    pub status: u16,
    pub body: Vec<u8>,
}

impl Call {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct Shared {
    settings: SimulatorSettings,
    secrets: Mutex<HashMap<String, SharedSecret>>,
    sites: Sites,
    faults: Mutex<FaultPlan>,
    calls: Mutex<VecDeque<Call>>,
    received: AtomicU64,
    stop: Shutdown,
}

/// A running simulated Confluence. Cheap to clone; stops when `shutdown` fires.
#[derive(Clone)]
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Simulator {
    /// Serves on `listener` until `shutdown` fires.
    pub fn serve(
        listener: TcpListener,
        settings: SimulatorSettings,
        shutdown: Shutdown,
    ) -> std::io::Result<Simulator> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            settings,
            secrets: Mutex::new(HashMap::new()),
            sites: Sites::default(),
            faults: Mutex::new(FaultPlan::default()),
            calls: Mutex::new(VecDeque::new()),
            received: AtomicU64::new(0),
            stop: shutdown.clone(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        tokio::spawn(async move {
            let stopped = shutdown.clone();
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
            {
                tracing::warn!(%error, "simulated Confluence stopped");
            }
        });
        Ok(Simulator { addr, shared })
    }

    /// Binds a free loopback port and serves there.
    pub async fn start(
        settings: SimulatorSettings,
        shutdown: Shutdown,
    ) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Simulator::serve(listener, settings, shutdown)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL tenants on this simulator install with (`http://host:port/wiki`).
    pub fn base_url(&self) -> String {
        format!("http://{}{BASE_PATH}", self.addr)
    }

    /// Makes a tenant known (or rotates its secret).
    pub fn register(&self, client_key: &str, shared_secret: &str) {
        lock(&self.shared.secrets).insert(client_key.to_string(), SharedSecret::new(shared_secret));
    }

    /// Adds a page to a tenant's site, as if a user had written it.
    pub fn add_page(&self, client_key: &str, id: &str, space_id: &str, title: &str) {
        self.shared.sites.add_page(client_key, id, space_id, title);
    }

    /// Misbehaves for `span`, after the faults already planned have run out.
    pub fn misbehave(&self, fault: Fault, span: FaultSpan) {
        lock(&self.shared.faults).push(fault, span);
    }

    /// Behaves again, dropping every planned fault.
    pub fn behave(&self) {
        lock(&self.shared.faults).clear();
    }

    /// The calls recorded so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.shared.calls).iter().cloned().collect()
    }

    /// How many requests arrived in all.
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::SeqCst)
    }

    /// The comments on a page, oldest first (storage-format bodies).
    pub fn comments(&self, client_key: &str, page_id: &str) -> Vec<String> {
        self.shared.sites.comments(client_key, page_id)
    }

    /// The labels on a piece of content.
    pub fn labels(&self, client_key: &str, content_id: &str) -> Vec<String> {
        self.shared.sites.labels(client_key, content_id)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let seq = shared.received.fetch_add(1, Ordering::SeqCst);
    let method = request.method().as_str().to_string();
    let target = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| request.uri().path().to_string());
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match to_bytes(request.into_body(), MAX_BODY_BYTES).await {
        Ok(bytes) => bytes.to_vec(),
        Err(_) => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        }
    };

    let checked = {
        let secrets = lock(&shared.secrets);
        auth::check(
            &shared.settings,
            &secrets,
            &method,
            &target,
            authorization.as_deref(),
        )
    };
    let mut call = Call {
        seq,
        method: method.clone(),
        target: target.clone(),
        client_key: checked.client_key.clone(),
        verdict: checked.verdict.clone(),
        status: 0,
        body,
    };
    let response = match (&checked.verdict, checked.client_key.as_deref()) {
        (Verdict::Refused(reason), _) => error(StatusCode::UNAUTHORIZED, reason),
        (Verdict::Accepted, None) => error(StatusCode::UNAUTHORIZED, "no tenant"),
        (Verdict::Accepted, Some(client_key)) => {
            let fault = lock(&shared.faults).next();
            match fault {
                Some(Fault::Hang) => {
                    record(&shared, call);
                    // Held until the client gives up or the simulator stops.
                    shared.stop.cancelled().await;
                    return error(StatusCode::SERVICE_UNAVAILABLE, "stopping");
                }
                Some(Fault::Status {
                    status,
                    retry_after,
                }) => fault_response(status, retry_after),
                None => shared
                    .sites
                    .answer(client_key, &method, &target, &call.body),
            }
        }
    };
    call.status = response.status().as_u16();
    record(&shared, call);
    response
}

fn record(shared: &Shared, call: Call) {
    let mut calls = lock(&shared.calls);
    if shared.settings.max_recorded_calls == 0 {
        return;
    }
    while calls.len() >= shared.settings.max_recorded_calls {
        calls.pop_front();
    }
    calls.push_back(call);
}

fn fault_response(status: u16, retry_after: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut response = error(code, code.canonical_reason().unwrap_or("unavailable"));
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(seconds));
    }
    if code == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert("ratelimit-reason", HeaderValue::from_static("tenant-burst"));
    }
    response
}

/// An error in the shape of Confluence's v1 errors.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "statusCode": status.as_u16(),
            "message": message,
            "data": { "authorized": status != StatusCode::UNAUTHORIZED, "valid": false, "errors": [] },
        })),
    )
        .into_response()
}

/// A JSON answer.
pub(crate) fn ok_json(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests;
