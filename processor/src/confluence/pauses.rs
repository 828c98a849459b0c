//! Pauses of the app's Confluence calls, shared by every replica through the database: a
//! tenant-quota answer holds back that tenant's calls, a global-quota answer every call, in
//! this process at once and in the others within [`REFRESH`].
//!
//! Each process keeps the pauses in force in memory and reads them again at most once per
//! [`REFRESH`], on the next call that asks; without a store (a client made outside a
//! processor) pauses are this process's own.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tributary_common::store::{Pause, PauseScope, PauseStore};

use super::observe;
use super::signals::QuotaScope;

/// How stale this process's view of other replicas' pauses may be.
pub(crate) const REFRESH: Duration = Duration::from_secs(1);

/// How long a call waits for a process's first read of the pauses before it goes on.
const FIRST_READ_WAIT: Duration = Duration::from_secs(5);

/// Pause ends on this process's clock (so paused test time works); the database holds
/// them as Unix milliseconds for the other replicas.
#[derive(Default)]
struct Snapshot {
    read_at: Option<Instant>,
    app: Option<Instant>,
    tenants: HashMap<String, Instant>,
}

pub(crate) struct Pauses {
    store: OnceLock<PauseStore>,
    snapshot: Mutex<Snapshot>,
    /// One refresh at a time; the others use the snapshot they have, once there is one.
    refreshing: tokio::sync::Mutex<()>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// `until_ms` (Unix milliseconds) on this process's clock.
fn instant_of(until_ms: i64, now_ms: i64) -> Instant {
    Instant::now() + Duration::from_millis(u64::try_from(until_ms - now_ms).unwrap_or(0))
}

fn scope_of(scope: QuotaScope) -> PauseScope {
    match scope {
        QuotaScope::Tenant => PauseScope::Tenant,
        QuotaScope::App => PauseScope::App,
    }
}

impl Pauses {
    pub fn new() -> Pauses {
        Pauses {
            store: OnceLock::new(),
            snapshot: Mutex::new(Snapshot::default()),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// Shares pauses through `store` from now on; the first store given stays.
    pub fn share_through(&self, store: PauseStore) {
        let _ = self.store.set(store);
    }

    fn snapshot(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long `client_key`'s calls must still wait, and whose quota holds them: the
    /// longer of the tenant's pause and the app's.
    pub async fn remaining(&self, client_key: &str) -> Option<(Duration, QuotaScope)> {
        self.refresh_if_stale().await;
        let now = Instant::now();
        let snapshot = self.snapshot();
        let tenant = snapshot
            .tenants
            .get(client_key)
            .map(|until| (*until, QuotaScope::Tenant));
        let app = snapshot.app.map(|until| (until, QuotaScope::App));
        let (until, scope) = [tenant, app]
            .into_iter()
            .flatten()
            .max_by_key(|(until, _)| *until)?;
        (until > now).then(|| (until - now, scope))
    }

    /// Holds back `scope`'s calls (the tenant's or the app's) for `wait`: here at once, in
    /// every other replica on its next refresh.
    pub async fn pause(&self, scope: QuotaScope, client_key: &str, wait: Duration, reason: &str) {
        let until = Instant::now() + wait;
        let until_ms = now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
        {
            let mut snapshot = self.snapshot();
            match scope {
                QuotaScope::App => {
                    snapshot.app = Some(snapshot.app.map_or(until, |earlier| earlier.max(until)));
                }
                QuotaScope::Tenant => {
                    let entry = snapshot
                        .tenants
                        .entry(client_key.to_string())
                        .or_insert(until);
                    *entry = (*entry).max(until);
                }
            }
        }
        self.share(scope, client_key, until_ms, reason).await;
    }

    async fn share(&self, scope: QuotaScope, client_key: &str, until_ms: i64, reason: &str) {
        observe::record_pause(scope);
        tracing::warn!(
            scope = scope.as_str(),
            client_key,
            reason,
            wait_ms = until_ms.saturating_sub(now_ms()),
            "Confluence quota spent: pausing calls"
        );
        let Some(store) = self.store.get() else {
            return;
        };
        let pause = Pause {
            scope: scope_of(scope),
            client_key: client_key.to_string(),
            until_ms,
            reason: reason.to_string(),
        };
        // Not sharing it costs other replicas one rate-limited answer each; never the event.
        if let Err(error) = store.pause(&pause).await {
            tracing::warn!(%error, "could not share a Confluence pause with other replicas");
        }
    }

    async fn refresh_if_stale(&self) {
        let Some(store) = self.store.get() else {
            return;
        };
        let fresh = |snapshot: &Snapshot| snapshot.read_at.is_some_and(|at| at.elapsed() < REFRESH);
        if fresh(&self.snapshot()) {
            return;
        }
        let never_read = self.snapshot().read_at.is_none();
        let _refreshing = match self.refreshing.try_lock() {
            Ok(guard) => guard,
            // A process that has never read the pauses knows nothing of other replicas'
            // pauses: its calls wait for the first read under way, for a bounded time so a
            // slow database cannot hold them. Later refreshes are not waited for; a view at
            // most one refresh old is the documented bound, and waiting there could queue
            // every call behind one database round trip.
            Err(_) if never_read => {
                match tokio::time::timeout(FIRST_READ_WAIT, self.refreshing.lock()).await {
                    Ok(guard) => {
                        if fresh(&self.snapshot()) {
                            return;
                        }
                        guard
                    }
                    Err(_) => return,
                }
            }
            Err(_) => return,
        };
        let now_ms = now_ms();
        // The caller that refreshes is a Confluence call too: a database that does not
        // answer must not hold it longer than a waiting caller would be held.
        let read = tokio::time::timeout(FIRST_READ_WAIT, store.in_force(now_ms)).await;
        match read {
            Ok(Ok(pauses)) => {
                let now = Instant::now();
                let mut snapshot = self.snapshot();
                // What this process paused itself and has not shared yet stays.
                let mut app = snapshot.app.filter(|until| *until > now);
                let mut tenants: HashMap<String, Instant> = snapshot
                    .tenants
                    .drain()
                    .filter(|(_, until)| *until > now)
                    .collect();
                for pause in pauses {
                    let until = instant_of(pause.until_ms, now_ms);
                    match pause.scope {
                        PauseScope::App => {
                            app = Some(app.map_or(until, |u| u.max(until)));
                        }
                        PauseScope::Tenant => {
                            let entry = tenants.entry(pause.client_key).or_insert(until);
                            *entry = (*entry).max(until);
                        }
                    }
                }
                observe::record_pauses_in_force(tenants.len() as u64, u64::from(app.is_some()));
                snapshot.app = app;
                snapshot.tenants = tenants;
                snapshot.read_at = Some(Instant::now());
            }
            Ok(Err(error)) => {
                // Keep what we have; try again after the refresh interval.
                tracing::debug!(%error, "could not read the Confluence pauses");
                self.snapshot().read_at = Some(Instant::now());
            }
            Err(_) => {
                tracing::debug!("the Confluence pauses were not read in time");
                self.snapshot().read_at = Some(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_tenant_pause_holds_that_tenant_and_an_app_pause_everyone() {
        let pauses = Pauses::new();
        assert_eq!(pauses.remaining("a").await, None);
        pauses
            .pause(
                QuotaScope::Tenant,
                "a",
                Duration::from_secs(300),
                "confluence-quota-tenant-based",
            )
            .await;
        let (wait, scope) = pauses.remaining("a").await.expect("a waits");
        assert!(wait > Duration::from_secs(290));
        assert_eq!(scope, QuotaScope::Tenant);
        assert_eq!(pauses.remaining("b").await, None);
        // A shorter answer does not shorten the wait.
        pauses
            .pause(QuotaScope::Tenant, "a", Duration::from_secs(1), "x")
            .await;
        assert!(
            pauses
                .remaining("a")
                .await
                .is_some_and(|(w, _)| w > Duration::from_secs(290))
        );

        pauses
            .pause(
                QuotaScope::App,
                "b",
                Duration::from_secs(600),
                "confluence-quota-global-based",
            )
            .await;
        assert_eq!(
            pauses.remaining("b").await.map(|(_, s)| s),
            Some(QuotaScope::App)
        );
        assert_eq!(
            pauses.remaining("c").await.map(|(_, s)| s),
            Some(QuotaScope::App)
        );
        assert_eq!(
            pauses.remaining("a").await.map(|(_, s)| s),
            Some(QuotaScope::App),
            "the longer of the two holds"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_replica_s_concurrent_first_calls_all_see_another_replica_s_pause() {
        use tributary_common::store::Database;
        use tributary_devkit::TestDatabase;

        let db = TestDatabase::create().await;
        let store = || PauseStore::new(Database::Postgres(db.pool.clone()));
        let first = Pauses::new();
        first.share_through(store());
        first
            .pause(
                QuotaScope::Tenant,
                "a",
                Duration::from_secs(300),
                "confluence-quota-tenant-based",
            )
            .await;
        // Many rounds: the calls that lose the race for the first read must wait for it,
        // not go on with a view that was never read.
        for _ in 0..20 {
            let second = Arc::new(Pauses::new());
            second.share_through(store());
            let calls: Vec<_> = (0..8)
                .map(|_| {
                    let second = second.clone();
                    tokio::spawn(async move { second.remaining("a").await })
                })
                .collect();
            for call in calls {
                let seen = call.await.expect("call");
                assert_eq!(seen.map(|(_, scope)| scope), Some(QuotaScope::Tenant));
            }
        }
    }
}
