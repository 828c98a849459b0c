//! The keys Forge signs invocation tokens with, fetched from a JWKS and cached by `kid`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use super::error::ForgeAuthError;

/// Largest JWKS document read; Atlassian's holds a handful of keys.
const MAX_JWKS_BYTES: usize = 256 * 1024;

pub const FETCHES_TOTAL: &str = "tributary_ingest_forge_jwks_fetches_total";

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kid: Option<String>,
    kty: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Arc<DecodingKey>>,
    last_attempt: Option<Instant>,
    last_failed: bool,
}

/// Keys of one JWKS by `kid`. A known `kid` costs no request. An unknown one refetches the
/// JWKS, but at most once per `refresh_interval`, so tokens with made-up kids cannot turn
/// into a flood of requests to the key host; concurrent misses share the one fetch.
#[derive(Clone)]
pub struct JwksProvider {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    http: reqwest::Client,
    refresh_interval: Duration,
    keys: RwLock<Keys>,
    fetching: Mutex<()>,
}

impl std::fmt::Debug for JwksProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksProvider")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

impl JwksProvider {
    pub fn new(url: &str, timeout: Duration, refresh_interval: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        JwksProvider {
            inner: Arc::new(Inner {
                url: url.to_string(),
                http,
                refresh_interval,
                keys: RwLock::new(Keys::default()),
                fetching: Mutex::new(()),
            }),
        }
    }

    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The key for `kid`.
    pub async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, ForgeAuthError> {
        if let Some(key) = self.inner.keys.read().await.by_kid.get(kid) {
            return Ok(key.clone());
        }
        let _one_fetch = self.inner.fetching.lock().await;
        {
            let keys = self.inner.keys.read().await;
            if let Some(key) = keys.by_kid.get(kid) {
                return Ok(key.clone());
            }
            if let Some(at) = keys.last_attempt
                && at.elapsed() < self.inner.refresh_interval
            {
                return Err(if keys.last_failed {
                    ForgeAuthError::KeyUnavailable("the last JWKS fetch failed".into())
                } else {
                    ForgeAuthError::UnknownKeyId
                });
            }
        }
        let fetched = self.fetch().await;
        let mut keys = self.inner.keys.write().await;
        keys.last_attempt = Some(Instant::now());
        match fetched {
            Ok(fresh) => {
                metrics::counter!(FETCHES_TOTAL, "outcome" => "ok").increment(1);
                keys.last_failed = false;
                // The JWKS is the whole truth: a key Atlassian withdrew is no longer trusted.
                keys.by_kid = fresh;
                keys.by_kid
                    .get(kid)
                    .cloned()
                    .ok_or(ForgeAuthError::UnknownKeyId)
            }
            Err(why) => {
                metrics::counter!(FETCHES_TOTAL, "outcome" => "error").increment(1);
                tracing::warn!(url = %self.inner.url, error = %why, "Forge JWKS fetch failed");
                keys.last_failed = true;
                Err(ForgeAuthError::KeyUnavailable(why))
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<DecodingKey>>, String> {
        let mut response = self
            .inner
            .http
            .get(&self.inner.url)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| e.without_url().to_string())?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err("JWKS document too large".into());
            }
        }
        parse_jwks(&body)
    }
}

/// The RS256 signing keys of a JWKS document by `kid`; other keys are skipped.
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, Arc<DecodingKey>>, String> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|_| "answer is not a JWKS")?;
    let mut keys = HashMap::new();
    for jwk in set.keys {
        let usable = jwk.kty.as_deref() == Some("RSA")
            && jwk.alg.as_deref().is_none_or(|a| a == "RS256")
            && jwk.usage.as_deref().is_none_or(|u| u == "sig");
        let (true, Some(kid), Some(n), Some(e)) = (usable, jwk.kid, jwk.n, jwk.e) else {
            continue;
        };
        if let Ok(key) = DecodingKey::from_rsa_components(&n, &e) {
            keys.insert(kid, Arc::new(key));
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rsa_signing_keys_are_kept() {
        let body = serde_json::json!({"keys": [
            {"kid": "a", "kty": "RSA", "alg": "RS256", "use": "sig", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"},
            {"kid": "b", "kty": "EC", "crv": "P-256", "x": "x", "y": "y"},
            {"kid": "c", "kty": "RSA", "alg": "RS512", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"}
        ]});
        let keys = parse_jwks(body.to_string().as_bytes()).expect("a JWKS");
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["a"]);
        assert!(parse_jwks(b"[1,2]").is_err());
    }
}
