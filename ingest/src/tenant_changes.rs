//! Tenant changes shared between ingest replicas through PostgreSQL `NOTIFY`.
//!
//! A replica that changes a tenant (reinstall with a rotated secret, uninstall, ...) announces
//! its clientKey; every replica listening drops that tenant from its secret cache, so a
//! rotated secret is refused everywhere within the notification's latency rather than the
//! cache's time-to-live. Each time it starts listening (at start, after a lost connection)
//! a replica forgets every cached tenant, since it may have missed announcements.
//!
//! On SQLite (one development process, so one replica) there is nobody to tell: both ends
//! do nothing.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tributary_common::shutdown::Shutdown;
use tributary_common::store::Database;

use crate::secrets::TenantSecrets;

pub const CHANNEL: &str = "tributary_tenant_changes";

/// Tells every replica that `client_key` changed. A failure is only logged: the change itself
/// is committed, and the other replicas' caches expire on their own.
pub async fn announce(db: &Database, client_key: &str) {
    let Some(pool) = db.as_postgres() else {
        return;
    };
    let sent = sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(client_key)
        .execute(pool)
        .await;
    if let Err(err) = sent {
        tracing::warn!(error = %err, "could not announce a tenant change to other replicas");
    }
}

/// Drops announced tenants from `secrets` until `shutdown` fires.
pub async fn follow(db: Database, secrets: TenantSecrets, shutdown: Shutdown) {
    if let Some(pool) = db.as_postgres() {
        follow_postgres(pool.clone(), secrets, shutdown).await;
    }
}

async fn follow_postgres(pool: PgPool, secrets: TenantSecrets, shutdown: Shutdown) {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    loop {
        let connect = || async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            connected = connect
                .retry(backoff)
                .notify(|err, _| tracing::warn!(error = %err, "cannot listen for tenant changes, retrying")) => connected,
        };
        let Ok(mut listener) = connected else {
            continue;
        };
        secrets.invalidate_all();
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = listener.try_recv() => next,
            };
            // A lost connection keeps the cache: while the database is unreachable no
            // replica can change a tenant, and webhooks keep being verified from the cache.
            // Once listening again, the cache is dropped for what may have been missed.
            match next {
                Ok(Some(notification)) => secrets.invalidate(notification.payload()).await,
                Ok(None) => {
                    tracing::warn!("lost the tenant change listener");
                    break;
                }
                Err(sqlx::Error::PoolClosed) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "lost the tenant change listener");
                    break;
                }
            }
        }
    }
}
