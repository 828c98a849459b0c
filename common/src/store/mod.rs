//! Database access: the connection pool, migrations and the tenant store.

mod tenants;

pub use tenants::{LifecycleRecord, StoreError, Tenant, TenantStatus, TenantStore, next_status};

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::Config;

/// The migrations in `migrations/`, built into every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A pool for `config.database_url`, giving up after the configured connect timeout.
pub async fn connect(config: &Config) -> Result<PgPool, sqlx::Error> {
    connect_url(
        &config.database_url.0,
        config.database_max_connections,
        Duration::from_secs(config.database_connect_timeout_seconds),
    )
    .await
}

pub async fn connect_url(
    url: &str,
    max_connections: u32,
    timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(timeout)
        .connect(url)
        .await
}

/// Creates the database named in `url` when it does not exist yet (first start, `migrate`).
pub async fn create_database_if_missing(url: &str) -> Result<(), sqlx::Error> {
    use sqlx::migrate::MigrateDatabase;
    if !sqlx::Postgres::database_exists(url).await? {
        sqlx::Postgres::create_database(url).await?;
    }
    Ok(())
}

/// Applies every pending migration; running it again changes nothing.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

#[cfg(test)]
mod tests;
