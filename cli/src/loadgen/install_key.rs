//! The load generator's own install-signing key and the key server that publishes it, so
//! the ingest can verify signed installs without Atlassian.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

pub struct InstallKey {
    pub kid: String,
    encoding: EncodingKey,
    public_pem: Arc<String>,
}

impl InstallKey {
    /// A fresh 2048-bit RSA key under a random `kid`.
    pub fn generate() -> anyhow::Result<Self> {
        let private =
            RsaPrivateKey::new(&mut rand::thread_rng(), 2048).context("generating an RSA key")?;
        let private_pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .context("encoding the private key")?;
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .context("encoding the public key")?;
        Ok(InstallKey {
            kid: format!("loadgen-{}", uuid::Uuid::new_v4().simple()),
            encoding: EncodingKey::from_rsa_pem(private_pem.as_bytes())
                .context("loading the key")?,
            public_pem: Arc::new(public_pem),
        })
    }

    pub fn sign(&self, claims: &serde_json::Value) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).context("signing the install")
    }

    /// Serves `GET /{kid}` on `listen` in the background; returns the bound address.
    pub async fn serve(&self, listen: SocketAddr) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the key server on {listen}"))?;
        let addr = listener.local_addr()?;
        let state = (self.kid.clone(), self.public_pem.clone());
        let app = Router::new()
            .route("/{kid}", get(serve_key))
            .with_state(state);
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                eprintln!("key server stopped: {err}");
            }
        });
        Ok(addr)
    }
}

async fn serve_key(
    State((kid, pem)): State<(String, Arc<String>)>,
    Path(asked): Path<String>,
) -> (StatusCode, String) {
    if asked == kid {
        (StatusCode::OK, pem.as_ref().clone())
    } else {
        (StatusCode::NOT_FOUND, String::new())
    }
}
