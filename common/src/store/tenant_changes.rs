//! Tenant changes shared between processes through PostgreSQL `NOTIFY`.
//!
//! A process that changes a tenant (reinstall with a rotated secret, uninstall, ...)
//! announces its clientKey; every process following the feed hears it and can drop what it
//! cached about that tenant. The feed also says when it may have missed announcements (at
//! start, after a lost connection), so a follower knows to forget everything it cached.
//!
//! On SQLite (one development process) there is nobody to tell: announcing does nothing and
//! the feed ends at once.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::{Database, StoreError, TenantStore};

/// The `NOTIFY` channel tenant changes travel on; the payload is the clientKey.
pub const CHANNEL: &str = "tributary_tenant_changes";

/// What the feed heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantChange {
    /// This tenant changed.
    Changed(String),
    /// Announcements may have been missed (the feed just started listening, or listens
    /// again after a lost connection): whatever was cached may be stale.
    Resync,
}

/// Announcements of tenant changes, as they arrive. Reconnects on its own after a lost
/// connection; cancelling [`TenantChangeFeed::next`] (in a `select!`) loses nothing.
pub struct TenantChangeFeed {
    pool: Option<PgPool>,
    listener: Option<PgListener>,
}

impl TenantChangeFeed {
    /// A feed on `db`; it starts listening on the first [`TenantChangeFeed::next`].
    pub fn new(db: &Database) -> Self {
        TenantChangeFeed {
            pool: db.as_postgres().cloned(),
            listener: None,
        }
    }

    /// The next change: [`TenantChange::Resync`] first and after every reconnection, then
    /// the clientKeys announced. Waits (retrying with backoff) while the database cannot be
    /// reached. `None` when there is no feed: on SQLite, or once the pool is closed.
    pub async fn next(&mut self) -> Option<TenantChange> {
        let pool = self.pool.as_ref()?;
        loop {
            let Some(listener) = self.listener.as_mut() else {
                self.listener = Some(listen(pool).await?);
                return Some(TenantChange::Resync);
            };
            // A lost connection is not a resync by itself: while the database is
            // unreachable nobody can change a tenant. Listening again is, for what may have
            // been missed meanwhile.
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    return Some(TenantChange::Changed(notification.payload().to_string()));
                }
                Ok(None) => {
                    tracing::warn!("lost the tenant change listener");
                    self.listener = None;
                }
                Err(sqlx::Error::PoolClosed) => return None,
                Err(err) => {
                    tracing::warn!(error = %err, "lost the tenant change listener");
                    self.listener = None;
                }
            }
        }
    }
}

/// A listener on [`CHANNEL`], retrying until the database answers; `None` once the pool
/// is closed.
async fn listen(pool: &PgPool) -> Option<PgListener> {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    let connect = || async {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    connect
        .retry(backoff)
        .when(|err| !matches!(err, sqlx::Error::PoolClosed))
        .notify(|err, _| tracing::warn!(error = %err, "cannot listen for tenant changes, retrying"))
        .await
        .ok()
}

/// Announcing from inside a transaction: PostgreSQL delivers the announcement when the
/// transaction commits, and not at all when it rolls back, so a follower never hears of a
/// change before it can read it. On SQLite there is nobody to tell.
pub(crate) trait AnnounceInTransaction {
    async fn announce_change(&mut self, key: &str) -> Result<(), sqlx::Error>;
}

impl AnnounceInTransaction for sqlx::PgConnection {
    async fn announce_change(&mut self, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(key)
            .execute(self)
            .await?;
        Ok(())
    }
}

impl AnnounceInTransaction for sqlx::SqliteConnection {
    async fn announce_change(&mut self, _key: &str) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

impl TenantStore {
    /// Tells every process following the feed that `client_key` changed.
    pub async fn announce_change(&self, client_key: &str) -> Result<(), StoreError> {
        let Some(pool) = self.database().as_postgres() else {
            return Ok(());
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(client_key)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// A feed of the changes announced from now on, by any process.
    pub fn change_feed(&self) -> TenantChangeFeed {
        TenantChangeFeed::new(self.database())
    }
}
