//! Test support shared by every crate's tests (feature `testing`): throwaway Postgres
//! databases and SQLite files, the mock Kafka cluster, a loopback install-key server and
//! signed-install tokens.

pub mod kafka;
pub mod sqlite;

pub use kafka::MockKafka;
pub use sqlite::TestSqlite;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::connect::token::RequestTarget;
use crate::connect::{SharedSecret, qsh};
use crate::crypto::SecretKeyring;

/// The first test RSA key pair (never used outside tests).
pub const INSTALL_KEY_1: &str = include_str!("../../testdata/install-key-1.pem");
pub const INSTALL_PUB_1: &str = include_str!("../../testdata/install-key-1.pub.pem");
/// A second key pair, for "signed with the wrong key" cases.
pub const INSTALL_KEY_2: &str = include_str!("../../testdata/install-key-2.pem");
pub const INSTALL_PUB_2: &str = include_str!("../../testdata/install-key-2.pub.pem");

/// The admin URL tests create their databases from: `DATABASE_URL`, or the local default.
pub fn admin_database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of one test's own, migrated, dropped when the value is dropped.
pub struct TestDatabase {
    pub pool: PgPool,
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let admin_url = admin_database_url();
        let name = format!(
            "tributary_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .get(..8)
                .unwrap_or("x")
        );
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&admin_url)
            .await
            .expect("tests need PostgreSQL: set DATABASE_URL to an admin connection URL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let url = replace_database(&admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(&url)
            .await
            .expect("connect to test database");
        crate::store::MIGRATOR
            .run(&pool)
            .await
            .expect("migrations apply");
        TestDatabase {
            pool,
            url,
            name,
            admin_url,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside a runtime that may be shutting down, so the clean-up gets a
        // thread and a small runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(admin) = PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&admin_url)
                    .await
                {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&admin)
                        .await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

/// `url` with its database name replaced by `name`.
pub fn replace_database(url: &str, name: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_path(&format!("/{name}"));
            parsed.to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// A fixed keyring for tests.
pub fn test_keyring() -> SecretKeyring {
    SecretKeyring::new([42; 32], &[])
}

/// The base64 form of [`test_keyring`]'s key, for `TRIBUTARY_SECRET_KEY`.
pub fn test_secret_key_base64() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([42u8; 32])
}

/// A loopback stand-in for Atlassian's install-key server.
#[derive(Clone)]
pub struct KeyServer {
    pub addr: SocketAddr,
    state: Arc<KeyServerState>,
}

struct KeyServerState {
    keys: std::sync::Mutex<HashMap<String, String>>,
    hits: AtomicUsize,
    failing: AtomicBool,
}

impl KeyServer {
    /// Serves `keys` (kid -> PEM) at `GET /{kid}` on a free loopback port.
    pub async fn start(keys: &[(&str, &str)]) -> KeyServer {
        let state = Arc::new(KeyServerState {
            keys: std::sync::Mutex::new(
                keys.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            hits: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
        });
        let app = Router::new()
            .route("/{kid}", get(serve_key))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind key server");
        let addr = listener.local_addr().expect("key server address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        KeyServer { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// While set, every request is answered 500.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    pub fn add_key(&self, kid: &str, pem: &str) {
        if let Ok(mut keys) = self.state.keys.lock() {
            keys.insert(kid.to_string(), pem.to_string());
        }
    }
}

async fn serve_key(
    State(state): State<Arc<KeyServerState>>,
    Path(kid): Path<String>,
) -> (StatusCode, String) {
    state.hits.fetch_add(1, Ordering::SeqCst);
    if state.failing.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "down".into());
    }
    let key = state
        .keys
        .lock()
        .ok()
        .and_then(|keys| keys.get(&kid).cloned());
    match key {
        Some(pem) => (StatusCode::OK, pem),
        None => (StatusCode::NOT_FOUND, "no such key".into()),
    }
}

/// Claims for a signed install as Atlassian makes them.
pub struct InstallClaims<'a> {
    pub client_key: &'a str,
    pub audience: &'a str,
    pub request: RequestTarget<'a>,
    pub issued_at: i64,
    pub ttl_seconds: i64,
}

/// An RS256 install token signed with `private_pem` under `kid`.
pub fn sign_install(claims: &InstallClaims<'_>, kid: &str, private_pem: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    let body = serde_json::json!({
        "iss": claims.client_key,
        "sub": "557058:install-user",
        "aud": [claims.audience],
        "iat": claims.issued_at,
        "exp": claims.issued_at + claims.ttl_seconds,
        "qsh": qsh(claims.request.method, claims.request.target, claims.request.base_path),
        "context": {},
    });
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("test key is a valid PEM");
    jsonwebtoken::encode(&header, &body, &key).expect("sign install token")
}

/// An HS256 token from "Confluence" (iss = clientKey) for `request`.
pub fn sign_from_confluence(
    client_key: &str,
    secret: &str,
    request: RequestTarget<'_>,
    issued_at: i64,
    ttl_seconds: i64,
) -> String {
    let claims = serde_json::json!({
        "iss": client_key,
        "iat": issued_at,
        "exp": issued_at + ttl_seconds,
        "qsh": qsh(request.method, request.target, request.base_path),
        "context": {},
    });
    crate::connect::token::sign_hs256(&claims, &SharedSecret::new(secret)).expect("sign")
}

/// Encodes arbitrary header and claims JSON with an arbitrary signature segment, for tokens
/// no honest library would make (`alg: none`, forged signatures).
pub fn forge_token(
    header: &serde_json::Value,
    claims: &serde_json::Value,
    signature: &str,
) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string()),
        signature
    )
}
