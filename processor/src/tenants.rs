//! Tenants kept in memory, so an event does not cost a database round trip to find its
//! tenant and secret.
//!
//! The cache stays true the way the ingest's does: every process that changes a tenant
//! announces it on the store's tenant-change feed (PostgreSQL `NOTIFY`), and this cache
//! forgets the tenant as soon as the announcement arrives, so a rotated secret or an
//! uninstall is seen at once rather than after the time-to-live. When the feed may have
//! missed announcements (at start, after a lost connection) everything is forgotten. The
//! time-to-live only bounds how long a lost announcement can matter.
//!
//! Unknown tenants are cached too (an install is announced, so the entry is dropped when
//! the tenant appears); lifecycle events always read the store, since they change the
//! tenant themselves.
//!
//! A tenant's Forge installation is kept beside it, under the same announcements (the
//! Forge store announces a new installation, a reinstall, a link to a Connect tenant and a
//! status change). Its system token is refreshed by every Forge delivery without an
//! announcement, so an entry is kept for at most [`FORGE_TTL`] and never once its token is
//! within [`FORGE_TOKEN_MARGIN`] of expiring: the token used is valid, if not the newest.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moka::future::Cache;
use tributary_common::connect::SharedSecret;
use tributary_common::forge::SystemToken;
use tributary_common::shutdown::Shutdown;
use tributary_common::store::{
    ForgeInstallation, ForgeStore, StoreError, Tenant, TenantChange, TenantChangeFeed, TenantStore,
};

/// Longest a Forge installation is kept in memory: its token is replaced by deliveries
/// without an announcement.
pub(crate) const FORGE_TTL: Duration = Duration::from_secs(60);
/// A kept token this close to expiring is read again rather than used.
pub(crate) const FORGE_TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// A tenant's Forge installation and its decrypted system token, when one is stored.
#[derive(Debug, Clone)]
pub(crate) struct ForgeIdentity {
    pub(crate) installation: ForgeInstallation,
    pub(crate) token: Option<SystemToken>,
}

impl ForgeIdentity {
    fn expires_within(&self, margin: Duration) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        let margin = i64::try_from(margin.as_secs()).unwrap_or(i64::MAX);
        self.token.is_some()
            && self
                .installation
                .token_expires_at
                .is_some_and(|at| at.saturating_sub(now) < margin)
    }
}

/// A tenant and its secret, as handlers' contexts share them.
#[derive(Debug, Clone)]
pub(crate) struct CachedTenant {
    pub(crate) tenant: Tenant,
    pub(crate) secret: SharedSecret,
}

#[derive(Clone)]
pub(crate) struct TenantCache {
    store: TenantStore,
    cache: Cache<String, Option<Arc<CachedTenant>>>,
    forge_store: ForgeStore,
    forge: Cache<String, Option<Arc<ForgeIdentity>>>,
    /// Bumped by every invalidation: a read that raced one is not cached.
    epoch: Arc<AtomicU64>,
}

impl TenantCache {
    pub fn new(store: TenantStore, forge_store: ForgeStore, capacity: u64, ttl: Duration) -> Self {
        TenantCache {
            store,
            cache: Cache::builder()
                .max_capacity(capacity.max(1))
                .time_to_live(ttl)
                .build(),
            forge_store,
            forge: Cache::builder()
                .max_capacity(capacity.max(1))
                .time_to_live(ttl.min(FORGE_TTL))
                .build(),
            epoch: Arc::default(),
        }
    }

    pub fn store(&self) -> &TenantStore {
        &self.store
    }

    /// The tenant with its secret, from memory when it is there.
    pub async fn get(&self, client_key: &str) -> Result<Option<Arc<CachedTenant>>, StoreError> {
        if let Some(hit) = self.cache.get(client_key).await {
            return Ok(hit);
        }
        self.load(client_key).await
    }

    /// The tenant as the store has it now; the cache keeps the answer.
    pub async fn load(&self, client_key: &str) -> Result<Option<Arc<CachedTenant>>, StoreError> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let loaded = self
            .store
            .get_with_secret(client_key)
            .await?
            .map(|(tenant, secret)| Arc::new(CachedTenant { tenant, secret }));
        if self.epoch.load(Ordering::Acquire) == epoch {
            self.cache
                .insert(client_key.to_string(), loaded.clone())
                .await;
        }
        Ok(loaded)
    }

    /// The Forge installation whose events travel under `tenant_key`, from memory when it
    /// is there and its token is not about to expire.
    pub async fn forge(&self, tenant_key: &str) -> Result<Option<Arc<ForgeIdentity>>, StoreError> {
        if let Some(hit) = self.forge.get(tenant_key).await
            && !hit
                .as_deref()
                .is_some_and(|identity| identity.expires_within(FORGE_TOKEN_MARGIN))
        {
            return Ok(hit);
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let loaded = self
            .forge_store
            .for_tenant(tenant_key)
            .await?
            .map(|(installation, token)| {
                Arc::new(ForgeIdentity {
                    installation,
                    token,
                })
            });
        if self.epoch.load(Ordering::Acquire) == epoch {
            self.forge
                .insert(tenant_key.to_string(), loaded.clone())
                .await;
        }
        Ok(loaded)
    }

    pub async fn invalidate(&self, client_key: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate(client_key).await;
        self.forge.invalidate(client_key).await;
    }

    pub fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate_all();
        self.forge.invalidate_all();
    }

    /// Forgets what `feed` says changed, until `shutdown` fires or the feed ends (on SQLite
    /// at once: one process, and its own lifecycle events bypass the cache).
    pub async fn follow_changes(self, mut feed: TenantChangeFeed, shutdown: Shutdown) {
        loop {
            let change = tokio::select! {
                _ = shutdown.cancelled() => return,
                change = feed.next() => change,
            };
            match change {
                Some(TenantChange::Changed(client_key)) => self.invalidate(&client_key).await,
                Some(TenantChange::Resync) => self.invalidate_all(),
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tributary_common::connect::{LifecycleEventType, LifecyclePayload};
    use tributary_devkit::{TestDatabase, test_keyring};

    use super::*;

    fn install(secret: &str) -> LifecyclePayload {
        LifecyclePayload::parse(
            serde_json::json!({
                "key": "com.example.tributary", "clientKey": "tenant-a", "sharedSecret": secret,
                "baseUrl": "https://tenant-a.atlassian.net/wiki", "eventType": "installed",
            })
            .to_string()
            .as_bytes(),
        )
        .expect("install body")
    }

    fn forge_store(db: &TestDatabase) -> ForgeStore {
        ForgeStore::new(db.pool.clone(), test_keyring())
    }

    fn secret_of(tenant: &Option<Arc<CachedTenant>>) -> Option<String> {
        tenant.as_ref().map(|t| t.secret.expose().to_string())
    }

    /// Polls the cache until `done` holds; the feed delivers within milliseconds, so the
    /// bound only keeps a broken build from hanging.
    /// Polls until the announcement made after `since` (an epoch) was heard and `done`
    /// holds of the tenant kept in memory.
    async fn until(
        cache: &TenantCache,
        since: u64,
        done: impl Fn(&Option<Arc<CachedTenant>>) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let heard = cache.epoch.load(Ordering::Acquire) > since;
            let tenant = cache.get("tenant-a").await.expect("read");
            // Kept in memory, not just read (a read racing an invalidation is not kept).
            if heard && done(&tenant) && cache.cache.contains_key("tenant-a") {
                return;
            }
            assert!(Instant::now() < deadline, "the cache never saw the change");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rotated_secret_and_an_uninstall_are_seen_as_soon_as_announced() {
        let db = TestDatabase::create().await;
        let store = TenantStore::new(db.pool.clone(), test_keyring());
        // A second store plays another service (the ingest) changing the tenant.
        let other = TenantStore::new(db.pool.clone(), test_keyring());
        let cache = TenantCache::new(
            store.clone(),
            forge_store(&db),
            100,
            Duration::from_secs(3600),
        );
        let stop = Shutdown::new();
        let follower = tokio::spawn(
            cache
                .clone()
                .follow_changes(store.change_feed(), stop.clone()),
        );

        assert!(cache.get("tenant-a").await.expect("read").is_none());
        other
            .record_install(&install("first"), "install-1")
            .await
            .expect("install");
        let since = cache.epoch.load(Ordering::Acquire);
        other.announce_change("tenant-a").await.expect("announce");
        until(&cache, since, |t| secret_of(t).as_deref() == Some("first")).await;

        // Unannounced, a change is not seen: the event path reads memory, not the store.
        other
            .record_install(&install("unannounced"), "install-2")
            .await
            .expect("install");
        assert_eq!(
            secret_of(&cache.get("tenant-a").await.expect("read")).as_deref(),
            Some("first")
        );

        other
            .record_install(&install("rotated"), "install-3")
            .await
            .expect("install");
        let since = cache.epoch.load(Ordering::Acquire);
        other.announce_change("tenant-a").await.expect("announce");
        until(&cache, since, |t| {
            secret_of(t).as_deref() == Some("rotated")
        })
        .await;

        other
            .apply_lifecycle("tenant-a", LifecycleEventType::Uninstalled, "uninstall-1")
            .await
            .expect("uninstall");
        let since = cache.epoch.load(Ordering::Acquire);
        other.announce_change("tenant-a").await.expect("announce");
        until(&cache, since, |t| {
            t.as_ref().is_some_and(|t| {
                t.tenant.status == tributary_common::store::TenantStatus::Uninstalled
            })
        })
        .await;

        stop.cancel();
        follower.await.expect("follower stops");
    }

    #[tokio::test]
    async fn an_invalidated_tenant_is_read_again() {
        let db = TestDatabase::create().await;
        let store = TenantStore::new(db.pool.clone(), test_keyring());
        store
            .record_install(&install("first"), "install-1")
            .await
            .expect("install");
        let cache = TenantCache::new(
            store.clone(),
            forge_store(&db),
            100,
            Duration::from_secs(3600),
        );
        assert_eq!(
            secret_of(&cache.get("tenant-a").await.expect("read")).as_deref(),
            Some("first")
        );
        store
            .record_install(&install("second"), "install-2")
            .await
            .expect("install");
        cache.invalidate("tenant-a").await;
        assert_eq!(
            secret_of(&cache.get("tenant-a").await.expect("read")).as_deref(),
            Some("second")
        );
        let epoch = cache.epoch.load(Ordering::Acquire);
        cache.invalidate_all();
        assert!(cache.epoch.load(Ordering::Acquire) > epoch);
        assert_eq!(
            cache.cache.get("tenant-a").await.map(|t| secret_of(&t)),
            None
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forge_installation_is_kept_until_the_store_announces_a_reinstall() {
        use tributary_common::store::{InvocationRecord, site_tenant_key};

        const CLOUD: &str = "6f1e3c2a-0000-4000-8000-00000000c10d";
        let record = |installation_id: &'static str| InvocationRecord {
            installation_id,
            cloud_id: Some(CLOUD),
            api_base_url: "https://api.atlassian.com/ex/confluence/6f1e3c2a",
            app_id: "ari:cloud:ecosystem::app/6a1b8ac2-4f5e-4a2b-9c47-2f9f8e7d6c5b",
            environment_type: Some("PRODUCTION"),
        };
        let db = TestDatabase::create().await;
        let store = TenantStore::new(db.pool.clone(), test_keyring());
        // Another store plays the ingest recording deliveries.
        let ingest = forge_store(&db);
        let cache = TenantCache::new(
            store.clone(),
            forge_store(&db),
            100,
            Duration::from_secs(3600),
        );
        let stop = Shutdown::new();
        let follower = tokio::spawn(
            cache
                .clone()
                .follow_changes(store.change_feed(), stop.clone()),
        );
        let key = site_tenant_key(CLOUD);
        let installation_of = |identity: &Option<Arc<ForgeIdentity>>| {
            identity
                .as_ref()
                .map(|identity| identity.installation.installation_id.clone())
        };
        // The feed is listening before the first change is made.
        let deadline = Instant::now() + Duration::from_secs(10);
        while cache.epoch.load(Ordering::Acquire) == 0 {
            assert!(Instant::now() < deadline, "the feed never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let far = SystemToken::new("token-one");
        let since = cache.epoch.load(Ordering::Acquire);
        ingest
            .record_invocation(&record("installation-1"), Some((&far, 4_000_000_000)))
            .await
            .expect("record");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The new installation's announcement heard, and the answer kept in memory.
            let heard = cache.epoch.load(Ordering::Acquire) > since;
            let identity = cache.forge(&key).await.expect("read");
            if heard
                && installation_of(&identity).as_deref() == Some("installation-1")
                && cache.forge.contains_key(&key)
            {
                assert_eq!(identity.and_then(|i| i.token.clone()), Some(far.clone()));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the new installation was never seen"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // A delivery that only brings a new token is not announced: the kept, valid token
        // is used, with no read per event.
        let newer = SystemToken::new("token-two");
        ingest
            .record_invocation(&record("installation-1"), Some((&newer, 4_000_000_000)))
            .await
            .expect("record");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let kept = cache.forge(&key).await.expect("read");
        assert_eq!(kept.and_then(|i| i.token.clone()), Some(far.clone()));

        // A reinstall is announced by the store itself, at its commit.
        ingest
            .record_invocation(&record("installation-2"), None)
            .await
            .expect("record");
        let deadline = Instant::now() + Duration::from_secs(10);
        while installation_of(&cache.forge(&key).await.expect("read")).as_deref()
            != Some("installation-2")
        {
            assert!(Instant::now() < deadline, "the reinstall was never seen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // A token about to expire is read again rather than used.
        let soon = SystemToken::new("token-three");
        let expires = i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_secs(),
        )
        .expect("seconds")
            + 10;
        ingest
            .record_invocation(&record("installation-2"), Some((&soon, expires)))
            .await
            .expect("record");
        cache.invalidate(&key).await;
        assert_eq!(
            cache
                .forge(&key)
                .await
                .expect("read")
                .and_then(|i| i.token.clone()),
            Some(soon)
        );
        let fresh = SystemToken::new("token-four");
        ingest
            .record_invocation(&record("installation-2"), Some((&fresh, 4_000_000_000)))
            .await
            .expect("record");
        assert_eq!(
            cache
                .forge(&key)
                .await
                .expect("read")
                .and_then(|i| i.token.clone()),
            Some(fresh)
        );

        stop.cancel();
        follower.await.expect("follower stops");
    }
}
