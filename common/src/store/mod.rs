//! All database access: the connection pool and migrations, the tenant store and its change
//! feed, Forge installations and recent Forge deliveries, the handled-event records and
//! tenant state handlers commit, events parked until a retry is due, and the Confluence
//! pauses every replica honours. No other module holds SQL.

mod database;
mod error;
mod forge;
mod handled;
mod parked;
mod pauses;
mod tenant_changes;
mod tenants;

pub use database::{Backend, Database, Dialect};
pub use error::StoreError;
pub use forge::{ForgeInstallation, ForgeStatus, ForgeStore, InvocationRecord, site_tenant_key};
pub use handled::{HandledEvent, HandledSet, HandlerRun, HandlerStore, StateWrites};
pub use parked::{ParkedEvent, ParkedKey, ParkedStore};
pub use pauses::{Pause, PauseScope, PauseStore};
pub use tenant_changes::{TenantChange, TenantChangeFeed};
pub use tenants::{
    InstallMode, LifecycleRecord, LifecycleStamp, Tenant, TenantStatus, TenantStore, next_status,
};

use std::time::Duration;

use crate::config::Config;

/// The PostgreSQL migrations in `migrations/`, built into every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The SQLite migrations in `migrations/sqlite/`: the same schema in SQLite's types.
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// A pool for `config.database_url`, giving up after the configured connect timeout.
pub async fn connect(config: &Config) -> Result<Database, sqlx::Error> {
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
) -> Result<Database, sqlx::Error> {
    Database::connect(url, max_connections, timeout).await
}

/// Creates the database named in `url` when it does not exist yet (first start, `migrate`).
pub async fn create_database_if_missing(url: &str) -> Result<(), sqlx::Error> {
    use sqlx::migrate::MigrateDatabase;
    match Backend::of_url(url) {
        Some(Backend::Sqlite) => {
            if !sqlx::Sqlite::database_exists(url).await? {
                sqlx::Sqlite::create_database(url).await?;
            }
        }
        _ => {
            if !sqlx::Postgres::database_exists(url).await? {
                sqlx::Postgres::create_database(url).await?;
            }
        }
    }
    Ok(())
}

/// Why the database could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("creating the database: {0}")]
    Create(#[source] sqlx::Error),
    #[error("connecting to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("applying migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Creates the database when missing, connects and applies the migrations: what a first
/// start and `tributary migrate` need.
pub async fn prepare(config: &Config) -> Result<Database, PrepareError> {
    create_database_if_missing(&config.database_url.0)
        .await
        .map_err(PrepareError::Create)?;
    let db = connect(config).await.map_err(PrepareError::Connect)?;
    migrate(&db).await?;
    Ok(db)
}

/// The migrations for `backend`.
pub fn migrator(backend: Backend) -> &'static sqlx::migrate::Migrator {
    match backend {
        Backend::Postgres => &MIGRATOR,
        Backend::Sqlite => &SQLITE_MIGRATOR,
    }
}

/// Applies every pending migration of the database's backend; running it again changes
/// nothing.
pub async fn migrate(db: &Database) -> Result<(), sqlx::migrate::MigrateError> {
    match db {
        Database::Postgres(pool) => MIGRATOR.run(pool).await,
        Database::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await,
    }
}

#[cfg(test)]
mod tests;
