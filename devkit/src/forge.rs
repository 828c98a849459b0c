//! Forge's side of a Forge Remote: the JWKS its invocation tokens are verified against
//! ([`JwksServer`]), and an installation that signs Forge Invocation Tokens and shapes
//! event deliveries the way Forge sends them ([`ForgeInstallation`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::RsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use tributary_common::connect::token::now_unix;

use crate::harness::Raw;
use crate::install_keys::InstallKey;
use crate::token::{Token, TokenError};

/// Where Forge publishes its keys, relative to the JWKS host.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// How long Forge's invocation tokens live (seconds).
pub const FIT_TTL_SECONDS: i64 = 300;
/// Where the ingest takes Forge deliveries.
pub const FORGE_EVENTS_PATH: &str = "/forge/events";
/// A Forge app id for tests.
pub const TEST_APP_ID: &str = "ari:cloud:ecosystem::app/6a1b8ac2-4f5e-4a2b-9c47-2f9f8e7d6c5b";

/// The JWK of an RSA public key in PEM, under `kid`.
pub fn jwk(kid: &str, public_pem: &str) -> Option<Value> {
    let key = RsaPublicKey::from_public_key_pem(public_pem).ok()?;
    Some(json!({
        "kid": kid,
        "kty": "RSA",
        "alg": "RS256",
        "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    }))
}

/// A loopback stand-in for Forge's JWKS host: `GET /.well-known/jwks.json`.
#[derive(Clone)]
pub struct JwksServer {
    pub addr: SocketAddr,
    state: Arc<JwksState>,
}

struct JwksState {
    keys: Mutex<Vec<Value>>,
    hits: AtomicUsize,
    failing: AtomicBool,
}

impl JwksServer {
    /// Serves the public keys of `keys` on `listen`.
    pub async fn bind(listen: SocketAddr, keys: &[&InstallKey]) -> std::io::Result<JwksServer> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(JwksState {
            keys: Mutex::new(
                keys.iter()
                    .filter_map(|k| jwk(k.kid(), k.public_pem()))
                    .collect(),
            ),
            hits: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
        });
        let app = Router::new()
            .route(JWKS_PATH, get(serve_jwks))
            .with_state(state.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::warn!(%error, "JWKS server stopped");
            }
        });
        Ok(JwksServer { addr, state })
    }

    /// Serves `keys` on a free loopback port (for tests: panics when it cannot).
    pub async fn start(keys: &[&InstallKey]) -> JwksServer {
        JwksServer::bind(([127, 0, 0, 1], 0).into(), keys)
            .await
            .expect("the JWKS server binds a loopback port")
    }

    /// The JWKS URL (`TRIBUTARY_FORGE_JWKS_URL`).
    pub fn url(&self) -> String {
        format!("http://{}{JWKS_PATH}", self.addr)
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// While set, every request is answered 500.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Publishes one more key (a rotation).
    pub fn add_key(&self, key: &InstallKey) {
        if let Some(jwk) = jwk(key.kid(), key.public_pem()) {
            self.state
                .keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(jwk);
        }
    }
}

async fn serve_jwks(State(state): State<Arc<JwksState>>) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    if state.failing.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
    }
    let keys = state
        .keys
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    axum::Json(json!({ "keys": keys })).into_response()
}

/// One Forge installation of an app on a site, as Forge presents it to a remote.
#[derive(Debug, Clone)]
pub struct ForgeInstallation {
    pub app_id: String,
    /// `ari:cloud:ecosystem::installation/<uuid>`.
    pub installation_id: String,
    pub cloud_id: String,
    /// `<api host>/ex/confluence/<cloudId>`.
    pub api_base_url: String,
    pub system_token: String,
    pub key: InstallKey,
}

impl ForgeInstallation {
    /// A fresh installation of `app_id` whose API lives at `api_origin` (`https://api.atlassian.com`
    /// or a simulated one), signing with `key`.
    pub fn new(app_id: &str, api_origin: &str, key: InstallKey) -> ForgeInstallation {
        let cloud_id = uuid::Uuid::new_v4().to_string();
        ForgeInstallation {
            app_id: app_id.to_string(),
            installation_id: format!("ari:cloud:ecosystem::installation/{}", uuid::Uuid::new_v4()),
            api_base_url: format!(
                "{}/ex/confluence/{cloud_id}",
                api_origin.trim_end_matches('/')
            ),
            cloud_id,
            system_token: format!("forge-system-{}", uuid::Uuid::new_v4().simple()),
            key,
        }
    }

    /// The claims of this installation's invocation token, issued now; change any of them
    /// before signing for deliberately odd tokens.
    pub fn token(&self) -> Token {
        let now = now_unix();
        Token::from_confluence("forge/invocation-token")
            .without("context")
            .issued_at(now)
            .ttl(FIT_TTL_SECONDS)
            .claim("nbf", now)
            .claim("aud", self.app_id.as_str())
            .claim("jti", uuid::Uuid::new_v4().to_string())
            .claim(
                "app",
                json!({
                    "id": self.app_id,
                    "installationId": self.installation_id,
                    "apiBaseUrl": self.api_base_url,
                    "environment": {"type": "DEVELOPMENT", "id": "3e1c8f3a-0000-4000-8000-000000000001"},
                    "module": {"type": "core:endpoint", "key": "tributary-events"},
                    "installation": {
                        "id": self.installation_id,
                        "contexts": [{"name": "confluence", "apiBaseUrl": self.api_base_url}],
                    },
                }),
            )
            .claim(
                "context",
                json!({"cloudId": self.cloud_id, "moduleKey": "tributary-events"}),
            )
    }

    /// `token` signed RS256 with this installation's key, as Forge signs.
    pub fn sign(&self, token: &Token) -> Result<String, TokenError> {
        self.key.sign(token)
    }

    /// A fresh, valid invocation token.
    pub fn fit(&self) -> Result<String, TokenError> {
        self.sign(&self.token())
    }

    /// `body` delivered to `/forge/events` with `fit` as the bearer token and the app
    /// system token in `x-forge-oauth-system`, as Forge sends it with `appSystemToken`.
    pub fn delivery_with(&self, body: &Value, fit: &str) -> Raw {
        Raw::post(FORGE_EVENTS_PATH, body)
            .header("authorization", &format!("Bearer {fit}"))
            .header("x-forge-oauth-system", &self.system_token)
    }

    /// `body` delivered with a fresh, valid invocation token.
    pub fn delivery(&self, body: &Value) -> Result<Raw, TokenError> {
        Ok(self.delivery_with(body, &self.fit()?))
    }

    /// A Confluence event body as Forge delivers it: `eventType`, `atlassianId` and the
    /// page or blog post as `content`.
    pub fn content_event(&self, event_type: &str, kind: &str, id: &str, title: &str) -> Value {
        json!({
            "eventType": event_type,
            "atlassianId": "557058:forge-user",
            "content": {
                "id": id,
                "type": kind,
                "status": "current",
                "title": title,
                "space": {"id": 98306, "key": "DEV", "name": "Development", "type": "global", "status": "current"},
                "history": {"latest": true, "createdBy": {"type": "known", "accountId": "557058:forge-user"}, "createdDate": "2026-12-01T10:00:00.000Z"},
            },
        })
    }

    /// `avi:forge:installed:app` (or `upgraded`) as Forge delivers it.
    pub fn lifecycle_event(&self, event_type: &str) -> Value {
        json!({
            "eventType": event_type,
            "id": self.installation_id,
            "installerAccountId": "557058:installer",
            "app": {"id": self.app_id, "version": "2.1.0"},
            "environment": {"id": "3e1c8f3a-0000-4000-8000-000000000001"},
        })
    }
}

/// `body` as Forge sends it on retry number `count`: with `retryContext`.
pub fn retried(body: &Value, count: u32) -> Value {
    let mut body = body.clone();
    if let Value::Object(map) = &mut body {
        map.insert(
            "retryContext".into(),
            json!({"retryCount": count, "retryReason": "TIMEOUT_ERROR"}),
        );
    }
    body
}
