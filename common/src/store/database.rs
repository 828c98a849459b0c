//! The database behind the stores: PostgreSQL for deployments, SQLite for a single
//! development process. The `database_url` scheme picks one.
//!
//! Store code is written once against [`with_database!`](crate::with_database), which
//! compiles the same body for each backend; the few places where the SQL differs read it
//! from the [`Dialect`].

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Connection, PgPool, postgres::PgPoolOptions};

/// A pooled PostgreSQL connection idle this long is pinged before it is handed out.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// A connection pool on one of the supported backends.
#[derive(Debug, Clone)]
pub enum Database {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Which backend a database URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// `postgres://` and `postgresql://` are PostgreSQL, `sqlite:` is SQLite.
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else {
            None
        }
    }
}

/// The SQL fragments that differ between the backends.
#[derive(Debug)]
pub struct Dialect {
    /// Starts a transaction that will write. SQLite takes the write lock up front, so two
    /// read-then-write transactions cannot deadlock or fail on a stale snapshot.
    pub begin_write: &'static str,
    /// The current time, as the backend stores timestamps.
    pub now: &'static str,
    /// Appended to a `SELECT` inside a write transaction to lock the rows it reads (SQLite's
    /// `BEGIN IMMEDIATE` already holds the whole database).
    pub for_update: &'static str,
    /// Appended to a bound parameter holding JSON text that goes into a JSON column.
    pub json_cast: &'static str,
}

impl Dialect {
    pub const POSTGRES: Dialect = Dialect {
        begin_write: "BEGIN",
        now: "now()",
        for_update: " FOR UPDATE",
        json_cast: "::jsonb",
    };
    pub const SQLITE: Dialect = Dialect {
        begin_write: "BEGIN IMMEDIATE",
        now: "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        for_update: "",
        json_cast: "",
    };
}

/// Evaluates `$body` with `$pool` bound to the backend's pool and `$dialect` to its
/// [`Dialect`]: one body, compiled once per backend.
///
/// ```text
/// let n: i64 = with_database!(&db, |pool, _sql| {
///     sqlx::query_scalar("SELECT count(*) FROM tenants").fetch_one(pool).await
/// })?;
/// ```
#[macro_export]
macro_rules! with_database {
    ($db:expr, |$pool:ident, $dialect:ident| $body:expr) => {
        match $db {
            $crate::store::Database::Postgres($pool) => {
                let $dialect: &$crate::store::Dialect = &$crate::store::Dialect::POSTGRES;
                $body
            }
            $crate::store::Database::Sqlite($pool) => {
                let $dialect: &$crate::store::Dialect = &$crate::store::Dialect::SQLITE;
                $body
            }
        }
    };
}

impl Database {
    pub fn backend(&self) -> Backend {
        match self {
            Database::Postgres(_) => Backend::Postgres,
            Database::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// The PostgreSQL pool, for what only PostgreSQL offers (`LISTEN`/`NOTIFY`).
    pub fn as_postgres(&self) -> Option<&PgPool> {
        match self {
            Database::Postgres(pool) => Some(pool),
            Database::Sqlite(_) => None,
        }
    }

    /// One round trip: does the database answer?
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        with_database!(self, |pool, _sql| {
            sqlx::query("SELECT 1").execute(pool).await.map(drop)
        })
    }

    pub async fn close(&self) {
        with_database!(self, |pool, _sql| pool.close().await)
    }

    /// A pool for `url`, giving up on a connection after `timeout`. A SQLite file is
    /// created when missing and written ahead-of-log, so readers do not wait for writers.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        timeout: Duration,
    ) -> Result<Database, sqlx::Error> {
        match Backend::of_url(url) {
            Some(Backend::Sqlite) => {
                let options = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(timeout)
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(timeout)
                    .connect_with(options)
                    .await?;
                Ok(Database::Sqlite(pool))
            }
            // Anything else is handed to the PostgreSQL driver, which names what is wrong.
            _ => {
                // sqlx pings every connection it hands out by default: a round trip before
                // each query or transaction, a third of a busy processor's. A connection
                // that was just in use is alive; one that idled may have been dropped.
                let pool = PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(timeout)
                    .test_before_acquire(false)
                    .before_acquire(|conn, meta| {
                        Box::pin(async move {
                            if meta.idle_for >= PING_AFTER_IDLE {
                                conn.ping().await?;
                            }
                            Ok(true)
                        })
                    })
                    .connect(url)
                    .await?;
                Ok(Database::Postgres(pool))
            }
        }
    }
}

impl From<PgPool> for Database {
    fn from(pool: PgPool) -> Self {
        Database::Postgres(pool)
    }
}

impl From<SqlitePool> for Database {
    fn from(pool: SqlitePool) -> Self {
        Database::Sqlite(pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_picks_the_backend() {
        assert_eq!(
            Backend::of_url("postgres://u@h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::of_url("postgresql://u@h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::of_url("sqlite:tributary-dev.db"),
            Some(Backend::Sqlite)
        );
        assert_eq!(Backend::of_url("sqlite::memory:"), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("mysql://h/db"), None);
    }
}
