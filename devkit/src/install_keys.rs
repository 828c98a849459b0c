//! Atlassian's side of signed installs: an RSA key that signs them under a `kid`
//! ([`InstallKey`]) and a loopback stand-in for the install-key server that publishes the
//! public keys ([`KeyServer`]); the ingest is pointed at it with `TRIBUTARY_INSTALL_KEYS_URL`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

use crate::token::{Token, TokenError};

/// The first test RSA key pair (never used outside tests).
pub const INSTALL_KEY_1: &str = include_str!("../testdata/install-key-1.pem");
pub const INSTALL_PUB_1: &str = include_str!("../testdata/install-key-1.pub.pem");
/// A second key pair, for "signed with the wrong key" cases.
pub const INSTALL_KEY_2: &str = include_str!("../testdata/install-key-2.pem");
pub const INSTALL_PUB_2: &str = include_str!("../testdata/install-key-2.pub.pem");

#[derive(Debug, thiserror::Error)]
pub enum InstallKeyError {
    #[error("generating an RSA key: {0}")]
    Generate(#[from] rsa::Error),
    #[error("encoding the private key: {0}")]
    Private(#[from] rsa::pkcs8::Error),
    #[error("encoding the public key: {0}")]
    Public(#[from] rsa::pkcs8::spki::Error),
}

/// An RSA key pair that signs installs under `kid`.
#[derive(Clone)]
pub struct InstallKey {
    kid: String,
    private_pem: String,
    public_pem: String,
}

impl std::fmt::Debug for InstallKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallKey")
            .field("kid", &self.kid)
            .finish()
    }
}

impl InstallKey {
    pub fn new(kid: &str, private_pem: &str, public_pem: &str) -> InstallKey {
        InstallKey {
            kid: kid.to_string(),
            private_pem: private_pem.to_string(),
            public_pem: public_pem.to_string(),
        }
    }

    /// The first test key pair ([`INSTALL_KEY_1`]) under `kid`.
    pub fn test(kid: &str) -> InstallKey {
        InstallKey::new(kid, INSTALL_KEY_1, INSTALL_PUB_1)
    }

    /// A fresh 2048-bit key under `kid` (slow: run it on a blocking thread).
    pub fn generate(kid: &str) -> Result<InstallKey, InstallKeyError> {
        let private = RsaPrivateKey::new(&mut rand::thread_rng(), 2048)?;
        let private_pem = private.to_pkcs8_pem(LineEnding::LF)?;
        let public_pem = private.to_public_key().to_public_key_pem(LineEnding::LF)?;
        Ok(InstallKey {
            kid: kid.to_string(),
            private_pem: private_pem.to_string(),
            public_pem,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// `token` signed RS256 with this key under its `kid`.
    pub fn sign(&self, token: &Token) -> Result<String, TokenError> {
        token.rs256(&self.kid, &self.private_pem)
    }
}

/// A loopback stand-in for Atlassian's install-key server: `GET /{kid}` answers the PEM
/// public key. Cheap to clone; serves until the runtime stops.
#[derive(Clone)]
pub struct KeyServer {
    pub addr: SocketAddr,
    state: Arc<KeyServerState>,
}

struct KeyServerState {
    keys: Mutex<HashMap<String, String>>,
    hits: AtomicUsize,
    failing: AtomicBool,
}

impl KeyServer {
    /// Serves `keys` (kid -> PEM) on `listen`.
    pub async fn bind(listen: SocketAddr, keys: &[(&str, &str)]) -> std::io::Result<KeyServer> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(KeyServerState {
            keys: Mutex::new(
                keys.iter()
                    .map(|(kid, pem)| (kid.to_string(), pem.to_string()))
                    .collect(),
            ),
            hits: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
        });
        let app = Router::new()
            .route("/{kid}", get(serve_key))
            .with_state(state.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::warn!(%error, "install-key server stopped");
            }
        });
        Ok(KeyServer { addr, state })
    }

    /// Serves `keys` on a free loopback port (for tests: panics when it cannot).
    pub async fn start(keys: &[(&str, &str)]) -> KeyServer {
        KeyServer::bind(([127, 0, 0, 1], 0).into(), keys)
            .await
            .expect("the key server binds a loopback port")
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
        lock(&self.state.keys).insert(kid.to_string(), pem.to_string());
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn serve_key(
    State(state): State<Arc<KeyServerState>>,
    Path(kid): Path<String>,
) -> (StatusCode, String) {
    state.hits.fetch_add(1, Ordering::SeqCst);
    if state.failing.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "down".into());
    }
    let key = lock(&state.keys).get(&kid).cloned();
    match key {
        Some(pem) => (StatusCode::OK, pem),
        None => (StatusCode::NOT_FOUND, "no such key".into()),
    }
}
