//! A simulated Confluence Cloud: the REST API an app calls back and Atlassian's OAuth 2.0
//! authorization server, for local development, demos and tests.
//!
//! Every tenant's site is served under one base path (`/wiki`) on one listener; the tenant
//! of a request is the clientKey its token names in `aud` (or the tenant a user's bearer
//! token was granted for). Each request is checked as Confluence checks it (HS256 with that
//! tenant's shared secret, `iss` the app key, `aud` `[clientKey]`, a qsh recomputed from the
//! request as received, `exp` and `iat`), recorded, and answered: with realistic JSON for
//! the calls the client's typed helpers make, or, in [`Answers::Echo`], with what it
//! received. `POST /oauth2/token` at the root is the JWT bearer grant for acting as a user.
//! A site registered for Forge is also reachable as Atlassian's API gateway serves it,
//! `/ex/confluence/<cloudId>/wiki/...`, with its installation's app system token as bearer.
//!
//! It can be told to misbehave: answer 429 or 503 with `Retry-After` (or any scripted
//! answer), or hang, for the next N requests or for a while; do the work and then answer
//! 500, or answer only after the client has given up; or hold every answer a little.

mod auth;
mod faults;
mod forge;
mod oauth;
mod site;

pub use faults::{Fault, FaultSpan, Scripted};
pub use oauth::AuthorizationServer;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tributary_common::connect::SharedSecret;
use tributary_common::shutdown::Shutdown;

use faults::FaultPlan;
use oauth::Grants;
use site::Sites;

/// The base path Confluence Cloud serves a site under.
pub const BASE_PATH: &str = "/wiki";

/// Largest request body the simulator reads.
const MAX_BODY_BYTES: usize = 1 << 20;

/// What an authenticated request gets when no fault is planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answers {
    /// The tenants' sites: pages, footer comments, labels and content properties in
    /// Confluence's JSON shapes; 404 for anything else.
    Site,
    /// `{"method", "path", "query", "body"}` of what was received, 200, for every request:
    /// for tests of what a client sends.
    Echo,
}

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimulatorSettings {
    /// The app key tokens must name as `iss`.
    pub app_key: String,
    /// Clock skew accepted on `exp` and `iat`.
    pub leeway_seconds: u64,
    /// How many calls the log keeps (the oldest go first); counters keep counting.
    pub max_recorded_calls: usize,
    pub answers: Answers,
}

impl SimulatorSettings {
    pub fn new(app_key: impl Into<String>) -> SimulatorSettings {
        SimulatorSettings {
            app_key: app_key.into(),
            leeway_seconds: 30,
            max_recorded_calls: 100_000,
            answers: Answers::Site,
        }
    }

    pub fn answering(mut self, answers: Answers) -> SimulatorSettings {
        self.answers = answers;
        self
    }
}

/// How a request identified itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A JWT signed as the app.
    App,
    /// A bearer token granted for acting as this user (account id).
    User(String),
    /// A Forge installation's app system token, through the API gateway.
    Forge,
    Nobody,
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

/// One REST request as the simulator received it.
#[derive(Debug, Clone)]
pub struct Call {
    /// Position in arrival order, from 0.
    pub seq: u64,
    pub method: String,
    /// Path and query exactly as received, base path included.
    pub target: String,
    /// The canonical request computed for an app token (empty for other callers).
    pub canonical: String,
    pub caller: Caller,
    /// The tenant the credentials named, when they named one.
    pub client_key: Option<String>,
    pub verdict: Verdict,
    /// The status answered (0 while held, and for a request held until the client gave up).
    pub status: u16,
    pub body: Vec<u8>,
}

impl Call {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the simulator knows of a tenant.
struct Tenant {
    secret: SharedSecret,
    oauth_client_id: Option<String>,
}

struct Shared {
    settings: SimulatorSettings,
    addr: SocketAddr,
    tenants: Mutex<HashMap<String, Tenant>>,
    /// Sites reachable through the Forge API gateway, by cloud id.
    forge_sites: Mutex<HashMap<String, forge::ForgeSite>>,
    sites: Sites,
    faults: Mutex<FaultPlan>,
    /// How long each authenticated request is held before it is answered.
    delay: Mutex<Duration>,
    calls: Mutex<VecDeque<Call>>,
    hits: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    grants: Grants,
    stop: Shutdown,
}

impl Shared {
    fn base_url(&self) -> String {
        format!("http://{}{BASE_PATH}", self.addr)
    }
}

/// A running simulated Confluence. Cheap to clone; stops when `shutdown` fires.
#[derive(Clone)]
pub struct Simulator {
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
            addr,
            tenants: Mutex::new(HashMap::new()),
            forge_sites: Mutex::new(HashMap::new()),
            sites: Sites::default(),
            faults: Mutex::new(FaultPlan::default()),
            delay: Mutex::new(Duration::ZERO),
            calls: Mutex::new(VecDeque::new()),
            hits: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            grants: Grants::default(),
            stop: shutdown.clone(),
        });
        let app = Router::new()
            .route(oauth::TOKEN_PATH, post(oauth::grant))
            .fallback(handle)
            .with_state(shared.clone());
        tokio::spawn(async move {
            let stopped = shutdown.clone();
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
            {
                tracing::warn!(%error, "simulated Confluence stopped");
            }
        });
        Ok(Simulator { shared })
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
        self.shared.addr
    }

    /// The base URL tenants on this simulator install with (`http://host:port/wiki`).
    pub fn base_url(&self) -> String {
        self.shared.base_url()
    }

    /// Makes a tenant known (or rotates its secret).
    pub fn register(&self, client_key: &str, shared_secret: &str) {
        let mut tenants = lock(&self.shared.tenants);
        let oauth_client_id = tenants
            .remove(client_key)
            .and_then(|tenant| tenant.oauth_client_id);
        tenants.insert(
            client_key.to_string(),
            Tenant {
                secret: SharedSecret::new(shared_secret),
                oauth_client_id,
            },
        );
    }

    /// Makes `client_key`'s site reachable through the Forge API gateway as `cloud_id`,
    /// for calls bearing `system_token`.
    pub fn register_forge(&self, cloud_id: &str, system_token: &str, client_key: &str) {
        lock(&self.shared.forge_sites).insert(
            cloud_id.to_string(),
            forge::ForgeSite {
                system_token: system_token.to_string(),
                client_key: client_key.to_string(),
            },
        );
    }

    /// The origin Forge installations on this simulator have as API host
    /// (`http://host:port`; their `apiBaseUrl` is this plus `/ex/confluence/<cloudId>`).
    pub fn forge_api_origin(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The `oauthClientId` a registered tenant installed with: its apps may then act as
    /// its users through the authorization server.
    pub fn set_oauth_client_id(&self, client_key: &str, oauth_client_id: &str) {
        if let Some(tenant) = lock(&self.shared.tenants).get_mut(client_key) {
            tenant.oauth_client_id = Some(oauth_client_id.to_string());
        }
    }

    /// Atlassian's authorization server, as played by this simulator.
    pub fn authorization_server(&self) -> AuthorizationServer {
        AuthorizationServer::of(self.shared.clone())
    }

    /// Adds a page to a tenant's site, as if a user had written it.
    pub fn add_page(&self, client_key: &str, id: &str, space_id: &str, title: &str) {
        self.shared.sites.add_page(client_key, id, space_id, title);
    }

    /// Misbehaves for `span`, after the faults already planned have run out.
    pub fn misbehave(&self, fault: Fault, span: FaultSpan) {
        lock(&self.shared.faults).push(fault, span);
    }

    /// Misbehaves for `span` of the requests made with `method`, after the faults already
    /// planned have run out; requests with other methods meanwhile are answered as usual.
    pub fn misbehave_on(&self, method: &str, fault: Fault, span: FaultSpan) {
        lock(&self.shared.faults).push_for(Some(method), fault, span);
    }

    /// Answers the next authenticated request with `answer`, after what is already planned.
    pub fn enqueue(&self, answer: Scripted) {
        self.misbehave(Fault::Answer(answer), FaultSpan::Requests(1));
    }

    /// Behaves again, dropping every planned fault.
    pub fn behave(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Holds every authenticated request this long before answering it.
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.shared.delay) = delay;
    }

    /// The calls recorded so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.shared.calls).iter().cloned().collect()
    }

    /// The calls recorded so far that came with a user's bearer token, oldest first.
    pub fn calls_as_users(&self) -> Vec<Call> {
        lock(&self.shared.calls)
            .iter()
            .filter(|call| matches!(call.caller, Caller::User(_)))
            .cloned()
            .collect()
    }

    /// How many REST requests arrived in all.
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// The most REST requests that were being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// The comments on a page, oldest first (storage-format bodies).
    pub fn comments(&self, client_key: &str, page_id: &str) -> Vec<String> {
        self.shared.sites.comments(client_key, page_id)
    }

    /// The key of a space pages were added to (`S<id>`), which v1 creates name it by.
    pub fn space_key(&self, client_key: &str, space_id: &str) -> Option<String> {
        self.shared.sites.space_key(client_key, space_id)
    }

    /// A page's current version number and title.
    pub fn page_version(&self, client_key: &str, page_id: &str) -> Option<(u64, String)> {
        self.shared.sites.page_version(client_key, page_id)
    }

    /// The ids of the pages titled `title` in a space.
    pub fn pages_titled(&self, client_key: &str, space_id: &str, title: &str) -> Vec<String> {
        self.shared.sites.pages_titled(client_key, space_id, title)
    }

    /// The labels on a piece of content.
    pub fn labels(&self, client_key: &str, content_id: &str) -> Vec<String> {
        self.shared.sites.labels(client_key, content_id)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts a request as being answered while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(in_flight: &'a AtomicUsize, max: &AtomicUsize) -> InFlight<'a> {
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        max.fetch_max(now, Ordering::SeqCst);
        InFlight(in_flight)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let seq = shared.hits.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight::enter(&shared.in_flight, &shared.max_in_flight);
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

    let (checked, site_target) = match forge::check(&shared, &target, authorization.as_deref()) {
        Some((checked, site_target)) => (checked, site_target),
        None => (
            auth::check(&shared, &method, &target, authorization.as_deref()),
            target.clone(),
        ),
    };
    // Recorded before it is answered, so a request held until the client gives up shows.
    record(
        &shared,
        Call {
            seq,
            method: method.clone(),
            target: target.clone(),
            canonical: checked.canonical,
            caller: checked.caller,
            client_key: checked.client_key.clone(),
            verdict: checked.verdict.clone(),
            status: 0,
            body: body.clone(),
        },
    );
    let response = match (&checked.verdict, checked.client_key.as_deref()) {
        (Verdict::Refused(reason), _) => error(StatusCode::UNAUTHORIZED, reason),
        (Verdict::Accepted, None) => error(StatusCode::UNAUTHORIZED, "no tenant"),
        (Verdict::Accepted, Some(client_key)) => {
            let delay = *lock(&shared.delay);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let usual = || match shared.settings.answers {
                Answers::Site => shared
                    .sites
                    .answer(client_key, &method, &site_target, &body),
                Answers::Echo => echo(&method, &site_target, &body),
            };
            let fault = lock(&shared.faults).next_for(&method);
            match fault {
                Some(Fault::Hang) => {
                    // Held until the client gives up or the simulator stops.
                    shared.stop.cancelled().await;
                    return error(StatusCode::SERVICE_UNAVAILABLE, "stopping");
                }
                Some(Fault::Answer(answer)) => scripted(answer),
                Some(Fault::AnswerAfterWork(answer)) => {
                    drop(usual());
                    scripted(answer)
                }
                Some(Fault::AnswerLate(delay)) => {
                    let response = usual();
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shared.stop.cancelled() => {}
                    }
                    response
                }
                None => usual(),
            }
        }
    };
    answered(&shared, seq, response.status().as_u16());
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

fn answered(shared: &Shared, seq: u64, status: u16) {
    let mut calls = lock(&shared.calls);
    if let Some(call) = calls.iter_mut().rev().find(|call| call.seq == seq) {
        call.status = status;
    }
}

fn scripted(answer: Scripted) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

fn echo(method: &str, target: &str, body: &[u8]) -> Response {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let echoed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    ok_json(
        StatusCode::OK,
        json!({ "method": method, "path": path, "query": query, "body": echoed }),
    )
}

/// An error in the shape of Confluence's v1 errors.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(error_body(status, message))).into_response()
}

pub(crate) fn error_body(status: StatusCode, message: &str) -> Value {
    json!({
        "statusCode": status.as_u16(),
        "message": message,
        "data": { "authorized": status != StatusCode::UNAUTHORIZED, "valid": false, "errors": [] },
    })
}

/// A JSON answer.
pub(crate) fn ok_json(status: StatusCode, body: Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests;
