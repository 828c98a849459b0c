//! Tenant changes shared between ingest replicas through PostgreSQL `NOTIFY`.
//!
//! A replica that changes a tenant (reinstall with a rotated secret, uninstall, ...) announces
//! its clientKey; every replica listening drops that tenant from its secret cache, so a
//! rotated secret is refused everywhere within the notification's latency rather than the
//! cache's time-to-live. While not listening (start, lost connection) a replica forgets
//! every cached tenant, since it may have missed announcements.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tributary_common::shutdown::Shutdown;

use crate::secrets::TenantSecrets;

pub const CHANNEL: &str = "tributary_tenant_changes";

/// Tells every replica that `client_key` changed. A failure is only logged: the change itself
/// is committed, and the other replicas' caches expire on their own.
pub async fn announce(pool: &PgPool, client_key: &str) {
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
pub async fn follow(pool: PgPool, secrets: TenantSecrets, shutdown: Shutdown) {
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
            match next {
                Ok(Some(notification)) => secrets.invalidate(notification.payload()).await,
                // The connection was lost and re-made: anything may have changed meanwhile.
                Ok(None) => secrets.invalidate_all(),
                Err(sqlx::Error::PoolClosed) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "lost the tenant change listener");
                    secrets.invalidate_all();
                    break;
                }
            }
        }
    }
}
