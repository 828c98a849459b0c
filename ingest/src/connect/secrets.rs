//! Tenant secrets kept in memory, and the HS256 check of requests from Confluence.
//!
//! A webhook must not cost a database round trip, so tenants are cached (bounded, with a
//! time-to-live). Keeping the cache true:
//! - a replica that changes a tenant forgets it and announces the change on the store's
//!   tenant-change feed; every replica following the feed forgets that tenant too, so a
//!   rotated secret is refused everywhere within the announcement's latency rather than the
//!   cache's time-to-live;
//! - when the feed may have missed announcements (at start, after a lost connection), every
//!   cached tenant is forgotten; while the database is unreachable the cache is kept, since
//!   nobody can change a tenant then and webhooks keep being verified;
//! - an announcement may still be lost, so a bad signature or an uninstalled status seen in
//!   a cached entry re-reads the tenant once, at most once per tenant per reload interval
//!   (forged signatures for a known tenant must not each cost a database read);
//! - an issuer the store does not know is remembered for a few seconds (bounded), so forged
//!   tokens with a made-up `iss` cost one read, not one each; a change announced for that
//!   clientKey (an install here or on another replica) forgets it at once.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use moka::future::Cache;
use tributary_common::connect::token::{Hs256Key, now_unix};
use tributary_common::connect::{
    AuthError, QshPolicy, RequestTarget, SharedSecret, UnverifiedToken,
};
use tributary_common::shutdown::Shutdown;
use tributary_common::store::{TenantChange, TenantChangeFeed, TenantStatus, TenantStore};

/// What a request check needs to know about a tenant.
#[derive(Debug, Clone)]
pub struct CachedTenant {
    pub secret: SharedSecret,
    /// The secret's HMAC key schedule, done once per tenant rather than per request.
    pub key: Hs256Key,
    pub base_url: String,
    pub status: TenantStatus,
}

#[derive(Debug)]
enum LoadError {
    Unknown,
    Store(String),
}

/// Whether a request from an uninstalled tenant may pass (lifecycle notifications may
/// arrive after `uninstalled`; webhooks may not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uninstalled {
    Refuse,
    Accept,
}

/// Reads of the tenant store made to verify a request, by outcome (`found`, `unknown`,
/// `error`): what forged requests cost the database.
pub const TENANT_READS_TOTAL: &str = "tributary_ingest_tenant_reads_total";

/// How many unknown issuers are remembered at most.
const UNKNOWN_ISSUERS: u64 = 10_000;

#[derive(Clone)]
pub struct TenantSecrets {
    store: TenantStore,
    cache: Cache<String, Arc<CachedTenant>>,
    /// Issuers the store did not know, briefly.
    unknown: Cache<String, ()>,
    /// Tenants re-read after a failed check, within the reload interval.
    reloaded: Cache<String, ()>,
    leeway_seconds: u64,
}

fn short_lived(capacity: u64, ttl: Duration) -> Cache<String, ()> {
    if ttl.is_zero() {
        return Cache::builder().max_capacity(0).build();
    }
    Cache::builder()
        .max_capacity(capacity)
        .time_to_live(ttl)
        .build()
}

impl TenantSecrets {
    pub fn new(store: TenantStore, capacity: u64, ttl: Duration, leeway_seconds: u64) -> Self {
        let capacity = capacity.max(1);
        TenantSecrets {
            store,
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            unknown: short_lived(UNKNOWN_ISSUERS, Duration::from_secs(5)),
            reloaded: short_lived(capacity, Duration::from_secs(1)),
            leeway_seconds,
        }
    }

    /// How long an unknown issuer is remembered, and how often at most one tenant is
    /// re-read after a failed check (zero: never remembered, re-read every time).
    pub fn with_negative_caching(
        mut self,
        unknown_ttl: Duration,
        reload_interval: Duration,
    ) -> Self {
        let capacity = self
            .cache
            .policy()
            .max_capacity()
            .unwrap_or(UNKNOWN_ISSUERS);
        self.unknown = short_lived(UNKNOWN_ISSUERS, unknown_ttl);
        self.reloaded = short_lived(capacity, reload_interval);
        self
    }

    /// True when `client_key` may be re-read now; marks it re-read for the interval.
    async fn may_reload(&self, client_key: &str) -> bool {
        if self.reloaded.contains_key(client_key) {
            return false;
        }
        self.reloaded.insert(client_key.to_string(), ()).await;
        true
    }

    /// This replica changed the tenant: forget it here and tell the other replicas. A
    /// failed announcement is only logged: the change itself is committed, and the other
    /// replicas' entries expire or fail over to a re-read on their own.
    pub async fn changed(&self, client_key: &str) {
        self.cache.invalidate(client_key).await;
        self.unknown.invalidate(client_key).await;
        if let Err(err) = self.store.announce_change(client_key).await {
            tracing::warn!(error = %err, "could not announce a tenant change to other replicas");
        }
    }

    /// Forgets what `feed` says changed, until `shutdown` fires or the feed ends (on SQLite
    /// at once: one process, nobody else changes tenants).
    pub async fn follow_changes(self, mut feed: TenantChangeFeed, shutdown: Shutdown) {
        loop {
            let change = tokio::select! {
                _ = shutdown.cancelled() => return,
                change = feed.next() => change,
            };
            match change {
                Some(TenantChange::Changed(client_key)) => {
                    self.cache.invalidate(&client_key).await;
                    self.unknown.invalidate(&client_key).await;
                }
                Some(TenantChange::Resync) => {
                    self.cache.invalidate_all();
                    self.unknown.invalidate_all();
                }
                None => return,
            }
        }
    }

    /// The tenant, and whether it was read from the store just now.
    async fn lookup(
        &self,
        client_key: &str,
        reload: bool,
    ) -> Result<Option<(Arc<CachedTenant>, bool)>, AuthError> {
        if reload {
            self.cache.invalidate(client_key).await;
        } else if self.unknown.contains_key(client_key) {
            return Ok(None);
        } else if let Some(cached) = self.cache.get(client_key).await {
            // The common case, without the key copy and loader an entry lookup builds.
            return Ok(Some((cached, false)));
        }
        let store = self.store.clone();
        let key = client_key.to_string();
        let loaded = self
            .cache
            .entry(client_key.to_string())
            .or_try_insert_with(async move {
                let read = store.get_with_secret(&key).await;
                let outcome = match &read {
                    Ok(Some(_)) => "found",
                    Ok(None) => "unknown",
                    Err(err) if err.is_caused_by_input() => "unknown",
                    Err(_) => "error",
                };
                metrics::counter!(TENANT_READS_TOTAL, "outcome" => outcome).increment(1);
                match read {
                    Ok(Some((tenant, secret))) => Ok(Arc::new(CachedTenant {
                        key: Hs256Key::new(&secret),
                        secret,
                        base_url: tenant.base_url,
                        status: tenant.status,
                    })),
                    Ok(None) => Err(LoadError::Unknown),
                    // A key the database cannot even hold names no tenant.
                    Err(err) if err.is_caused_by_input() => Err(LoadError::Unknown),
                    Err(err) => Err(LoadError::Store(err.to_string())),
                }
            })
            .await;
        match loaded {
            Ok(entry) => {
                let fresh = entry.is_fresh();
                Ok(Some((entry.into_value(), fresh)))
            }
            Err(err) => match &*err {
                LoadError::Unknown => {
                    self.unknown.insert(client_key.to_string(), ()).await;
                    Ok(None)
                }
                LoadError::Store(why) => Err(AuthError::StoreUnavailable(why.clone())),
            },
        }
    }

    /// Verifies an HS256 token from Confluence in the order the protocol prescribes: decode
    /// untrusted, find the tenant by `iss`, check the HMAC, then time and qsh. A bad signature
    /// or an uninstalled status seen in a cached entry is checked once more against the store.
    /// Answers the token's issuer (the tenant's clientKey) and the tenant.
    pub async fn verify(
        &self,
        raw_token: &str,
        request: RequestTarget<'_>,
        uninstalled: Uninstalled,
    ) -> Result<(String, Arc<CachedTenant>), AuthError> {
        let token = UnverifiedToken::parse(raw_token)?;
        token.require_algorithm(Algorithm::HS256)?;
        let mut reload = false;
        loop {
            let (tenant, fresh) = self
                .lookup(token.issuer(), reload)
                .await?
                .ok_or(AuthError::UnknownIssuer)?;
            let verified = token.check_hs256_keyed(
                &tenant.key,
                request,
                QshPolicy::RequestOnly,
                now_unix(),
                self.leeway_seconds,
            );
            // A cached entry may be stale (a lost announcement): read it again, but only once
            // per tenant per interval, whatever a forger sends.
            let may_retry = !fresh && !reload;
            match verified {
                Err(AuthError::BadSignature)
                    if may_retry && self.may_reload(token.issuer()).await =>
                {
                    reload = true
                }
                Err(err) => return Err(err),
                Ok(())
                    if tenant.status == TenantStatus::Uninstalled
                        && uninstalled == Uninstalled::Refuse =>
                {
                    if may_retry && self.may_reload(token.issuer()).await {
                        reload = true;
                    } else {
                        return Err(AuthError::TenantUninstalled);
                    }
                }
                Ok(()) => return Ok((token.into_issuer(), tenant)),
            }
        }
    }
}
