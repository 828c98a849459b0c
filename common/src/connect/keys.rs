//! Public keys for signed installs, fetched by `kid` from Atlassian's key servers.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::DecodingKey;
use moka::future::Cache;

use super::error::AuthError;

/// Largest key document we read; a PEM public key is well under this.
const MAX_KEY_BYTES: usize = 16 * 1024;

/// A `kid` goes into a URL path, so only a plain segment is allowed.
pub fn is_safe_key_id(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 128
        && kid != "."
        && kid != ".."
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Fetches PEM public keys by `kid`, trying each key server in order, and caches them.
/// Keys are immutable per `kid` (a rotated key gets a new one), so entries never go stale;
/// the cache is bounded so that a flood of made-up kids cannot grow memory.
#[derive(Clone)]
pub struct InstallKeyProvider {
    servers: Arc<Vec<String>>,
    http: reqwest::Client,
    cache: Cache<String, Arc<DecodingKey>>,
    /// Kids no key server knows, remembered briefly: a forger repeating a made-up kid costs
    /// one round of fetches, not one per request.
    unknown: Cache<String, ()>,
}

/// How many unknown kids are remembered, and for how long by default.
const UNKNOWN_KIDS: u64 = 4096;
const UNKNOWN_KID_TTL: Duration = Duration::from_secs(5);

impl std::fmt::Debug for InstallKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallKeyProvider")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum FetchOutcome {
    NotFound,
    Failed(String),
}

impl InstallKeyProvider {
    pub fn new(servers: Vec<String>, timeout: Duration, cache_size: u64) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        InstallKeyProvider {
            servers: Arc::new(
                servers
                    .into_iter()
                    .map(|s| s.trim_end_matches('/').to_string())
                    .collect(),
            ),
            http,
            cache: Cache::builder().max_capacity(cache_size.max(1)).build(),
            unknown: Self::unknown_cache(UNKNOWN_KID_TTL),
        }
    }

    fn unknown_cache(ttl: Duration) -> Cache<String, ()> {
        Cache::builder()
            .max_capacity(UNKNOWN_KIDS)
            .time_to_live(ttl)
            .build()
    }

    /// Remembers a kid that no key server knows for `ttl` (zero: not at all). Only "not
    /// found" answers are remembered: a key server that fails is asked again next time.
    pub fn with_unknown_kid_ttl(mut self, ttl: Duration) -> Self {
        self.unknown = if ttl.is_zero() {
            Cache::builder().max_capacity(0).build()
        } else {
            Self::unknown_cache(ttl)
        };
        self
    }

    /// The key for `kid`. Concurrent callers for one `kid` share a single fetch. A kid every
    /// server answered 404 for is refused without asking again for a few seconds; other
    /// failures are not remembered, so the next install tries the servers again.
    pub async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, AuthError> {
        if !is_safe_key_id(kid) {
            return Err(AuthError::InvalidKeyId);
        }
        if self.unknown.contains_key(kid) {
            return Err(AuthError::UnknownKeyId);
        }
        let fetched = self
            .cache
            .try_get_with(kid.to_string(), self.fetch(kid))
            .await
            .map_err(|err: Arc<AuthError>| (*err).clone());
        if matches!(fetched, Err(AuthError::UnknownKeyId)) {
            self.unknown.insert(kid.to_string(), ()).await;
        }
        fetched
    }

    async fn fetch(&self, kid: &str) -> Result<Arc<DecodingKey>, AuthError> {
        let mut failures = Vec::new();
        let mut all_not_found = true;
        for server in self.servers.iter() {
            match self.fetch_from(server, kid).await {
                Ok(key) => {
                    metrics::counter!("tributary_ingest_install_key_fetches_total", "outcome" => "ok")
                        .increment(1);
                    return Ok(Arc::new(key));
                }
                Err(FetchOutcome::NotFound) => {
                    metrics::counter!("tributary_ingest_install_key_fetches_total", "outcome" => "not_found")
                        .increment(1);
                    failures.push(format!("{server}: not found"));
                }
                Err(FetchOutcome::Failed(why)) => {
                    metrics::counter!("tributary_ingest_install_key_fetches_total", "outcome" => "error")
                        .increment(1);
                    all_not_found = false;
                    tracing::warn!(server = %server, error = %why, "install key server failed, trying the next");
                    failures.push(format!("{server}: {why}"));
                }
            }
        }
        if all_not_found && !self.servers.is_empty() {
            Err(AuthError::UnknownKeyId)
        } else {
            Err(AuthError::KeyUnavailable(failures.join("; ")))
        }
    }

    async fn fetch_from(&self, server: &str, kid: &str) -> Result<DecodingKey, FetchOutcome> {
        let url = format!("{server}/{kid}");
        let mut response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| FetchOutcome::Failed(e.without_url().to_string()))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(FetchOutcome::NotFound);
        }
        if !response.status().is_success() {
            return Err(FetchOutcome::Failed(format!(
                "status {}",
                response.status()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchOutcome::Failed(e.without_url().to_string()))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_KEY_BYTES {
                return Err(FetchOutcome::Failed("key document too large".into()));
            }
        }
        DecodingKey::from_rsa_pem(&body)
            .map_err(|_| FetchOutcome::Failed("answer is not a PEM RSA public key".into()))
    }
}
