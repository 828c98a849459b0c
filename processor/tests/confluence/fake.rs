//! Loopback stand-ins for a tenant's Confluence and Atlassian's authorization server. The
//! fake Confluence checks every request the way Confluence does: it recomputes the qsh from
//! the request it received and verifies the token's signature, issuer, audience and times.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Form, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tributary_common::connect::token::now_unix;
use tributary_common::connect::{
    CanonicalRequest, QshPolicy, RequestTarget, SharedSecret, UnverifiedToken,
};

pub const APP_KEY: &str = "com.example.tributary";
pub const CLIENT_KEY: &str = "client-key-acme";
pub const SECRET: &str = "a-shared-secret-of-reasonable-length-0123456789";
pub const OAUTH_CLIENT_ID: &str = "oauth-client-acme";
pub const BASE_PATH: &str = "/wiki";

/// How a request identified itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    App,
    User(String),
    Nobody,
}

/// One request as the fake received it, with the fake's verdict on its credentials.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query exactly as received, base path included.
    pub target: String,
    /// The canonical request the fake computed (empty when not signed as the app).
    pub canonical: String,
    pub caller: Caller,
    pub verdict: Result<(), String>,
    pub body: Vec<u8>,
}

/// A canned answer; requests beyond the script get a 200 echo of what was received.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Scripted {
    pub fn status(status: u16) -> Scripted {
        Scripted {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Scripted {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<String>) -> Scripted {
        self.body = body.into();
        self
    }

    pub fn json(status: u16, body: Value) -> Scripted {
        Scripted::status(status)
            .header("content-type", "application/json")
            .body(body.to_string())
    }
}

/// Bearer tokens the fake authorization server has issued and not revoked.
pub type IssuedTokens = Arc<Mutex<HashSet<String>>>;

struct ConfluenceState {
    script: Mutex<VecDeque<Scripted>>,
    received: Mutex<Vec<Received>>,
    hits: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    delay: Mutex<Duration>,
    issued: IssuedTokens,
}

#[derive(Clone)]
pub struct FakeConfluence {
    pub addr: SocketAddr,
    state: Arc<ConfluenceState>,
}

impl FakeConfluence {
    pub async fn start(issued: IssuedTokens) -> FakeConfluence {
        let state = Arc::new(ConfluenceState {
            script: Mutex::new(VecDeque::new()),
            received: Mutex::new(Vec::new()),
            hits: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            delay: Mutex::new(Duration::ZERO),
            issued,
        });
        let app = Router::new().fallback(serve).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake Confluence");
        let addr = listener.local_addr().expect("fake Confluence address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeConfluence { addr, state }
    }

    /// The tenant base URL, with Confluence's `/wiki` path.
    pub fn base_url(&self) -> String {
        format!("http://{}{BASE_PATH}", self.addr)
    }

    pub fn enqueue(&self, answer: Scripted) {
        self.state.script.lock().expect("script").push_back(answer);
    }

    /// How long each request is held before it is answered.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().expect("delay") = delay;
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("received").clone()
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(State(state): State<Arc<ConfluenceState>>, request: Request) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _in_flight = InFlight(&state.in_flight);

    let method = request.method().as_str().to_string();
    let target = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_default();
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = to_bytes(request.into_body(), 1 << 20)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();

    let (caller, canonical, verdict) =
        check_credentials(&state, &method, &target, authorization.as_deref());
    let verdict = verdict.and_then(|()| {
        if target.starts_with(&format!("{BASE_PATH}/")) {
            Ok(())
        } else {
            Err(format!("`{target}` is not under {BASE_PATH}"))
        }
    });
    state.received.lock().expect("received").push(Received {
        method: method.clone(),
        target: target.clone(),
        canonical,
        caller,
        verdict: verdict.clone(),
        body: body.clone(),
    });
    if let Err(reason) = verdict {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "reason": reason })),
        )
            .into_response();
    }
    let delay = *state.delay.lock().expect("delay");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let scripted = state.script.lock().expect("script").pop_front();
    match scripted {
        Some(answer) => {
            let mut response = Response::new(Body::from(answer.body));
            *response.status_mut() = StatusCode::from_u16(answer.status).expect("status");
            for (name, value) in answer.headers {
                response.headers_mut().append(
                    HeaderName::try_from(name).expect("header name"),
                    HeaderValue::try_from(value).expect("header value"),
                );
            }
            response
        }
        None => {
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let echoed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            axum::Json(json!({
                "method": method,
                "path": path,
                "query": query,
                "body": echoed,
            }))
            .into_response()
        }
    }
}

fn check_credentials(
    state: &ConfluenceState,
    method: &str,
    target: &str,
    authorization: Option<&str>,
) -> (Caller, String, Result<(), String>) {
    let Some(authorization) = authorization else {
        return (
            Caller::Nobody,
            String::new(),
            Err("no Authorization header".into()),
        );
    };
    if let Some(bearer) = authorization.strip_prefix("Bearer ") {
        let known = state.issued.lock().expect("issued").contains(bearer);
        let verdict = if known {
            Ok(())
        } else {
            Err("unknown bearer token".into())
        };
        return (Caller::User(bearer.to_string()), String::new(), verdict);
    }
    let Some(raw) = authorization.strip_prefix("JWT ") else {
        return (Caller::Nobody, String::new(), Err("unknown scheme".into()));
    };
    // The qsh as Confluence computes it: from the method and target it received, relative
    // to the site's base path.
    let canonical = CanonicalRequest::new(method, target, BASE_PATH);
    let verdict = verify_app_token(raw, method, target, &canonical.qsh);
    (Caller::App, canonical.canonical, verdict)
}

fn verify_app_token(
    raw: &str,
    method: &str,
    target: &str,
    expected_qsh: &str,
) -> Result<(), String> {
    let token = UnverifiedToken::parse(raw).map_err(|e| e.to_string())?;
    let verified = token
        .verify_hs256(
            &SharedSecret::new(SECRET),
            RequestTarget {
                method,
                target,
                base_path: BASE_PATH,
            },
            QshPolicy::RequestOnly,
            now_unix(),
            30,
        )
        .map_err(|e| e.to_string())?;
    if verified.issuer != APP_KEY {
        return Err(format!("iss `{}` is not the app key", verified.issuer));
    }
    if verified.claims.get("qsh").and_then(Value::as_str) != Some(expected_qsh) {
        return Err("qsh differs from the recomputed one".into());
    }
    if verified.claims.get("aud") != Some(&json!([CLIENT_KEY])) {
        return Err("aud is not [clientKey]".into());
    }
    let iat = verified
        .claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or("no iat")?;
    let exp = verified
        .claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or("no exp")?;
    if exp - iat > 600 {
        return Err("token lives longer than 10 minutes".into());
    }
    Ok(())
}

struct AuthState {
    url: String,
    base_url: String,
    requests: AtomicUsize,
    issued: IssuedTokens,
    delay: Duration,
    grants: Mutex<Vec<Result<String, String>>>,
}

/// The OAuth 2.0 authorization server: checks the JWT bearer assertion and issues tokens.
#[derive(Clone)]
pub struct FakeAuthServer {
    pub addr: SocketAddr,
    state: Arc<AuthState>,
}

impl FakeAuthServer {
    /// `base_url` is the tenant base URL the assertions must name as `tnt`; each grant is
    /// held for `delay` so concurrent callers overlap with it.
    pub async fn start(issued: IssuedTokens, base_url: String, delay: Duration) -> FakeAuthServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake authorization server");
        let addr = listener.local_addr().expect("authorization server address");
        let state = Arc::new(AuthState {
            url: format!("http://{addr}"),
            base_url,
            requests: AtomicUsize::new(0),
            issued,
            delay,
            grants: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/oauth2/token", post(grant))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeAuthServer { addr, state }
    }

    pub fn url(&self) -> String {
        self.state.url.clone()
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Each grant's verdict: the account id it was for, or why it was refused.
    pub fn grants(&self) -> Vec<Result<String, String>> {
        self.state.grants.lock().expect("grants").clone()
    }
}

#[derive(serde::Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    tnt: String,
}

async fn grant(
    State(state): State<Arc<AuthState>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(state.delay).await;
    let verdict = check_grant(&state, &form);
    state.grants.lock().expect("grants").push(verdict.clone());
    match verdict {
        Ok(account) => {
            let token = format!("user-token-{n}-{account}");
            state.issued.lock().expect("issued").insert(token.clone());
            axum::Json(json!({ "access_token": token, "expires_in": 900, "token_type": "Bearer" }))
                .into_response()
        }
        Err(reason) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "invalid_grant", "error_description": reason })),
        )
            .into_response(),
    }
}

fn check_grant(state: &AuthState, form: &HashMap<String, String>) -> Result<String, String> {
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return Err("wrong grant_type".into());
    }
    let assertion = form.get("assertion").ok_or("no assertion")?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&[state.url.as_str()]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
    let claims = jsonwebtoken::decode::<AssertionClaims>(
        assertion,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .map_err(|e| format!("assertion: {e}"))?
    .claims;
    if claims.iss != format!("urn:atlassian:connect:clientid:{OAUTH_CLIENT_ID}") {
        return Err(format!("iss `{}`", claims.iss));
    }
    if claims.tnt != state.base_url {
        return Err(format!("tnt `{}`", claims.tnt));
    }
    claims
        .sub
        .strip_prefix("urn:atlassian:connect:useraccountid:")
        .map(str::to_string)
        .ok_or_else(|| format!("sub `{}`", claims.sub))
}
