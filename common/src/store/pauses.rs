//! Confluence calls held back because a quota is spent: written by the replica that got the
//! rate-limit answer, read by every replica, so none spends what another was told to wait
//! for.

use super::{Database, StoreError};
use crate::with_database;

/// Whose calls a pause holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PauseScope {
    /// One tenant's calls (its quota, or its site, is spent).
    Tenant,
    /// Every call of the app (the app's global quota is spent).
    App,
}

impl PauseScope {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseScope::Tenant => "tenant",
            PauseScope::App => "app",
        }
    }

    fn parse(text: &str) -> Option<PauseScope> {
        match text {
            "tenant" => Some(PauseScope::Tenant),
            "app" => Some(PauseScope::App),
            _ => None,
        }
    }
}

/// One pause in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    pub scope: PauseScope,
    /// The tenant held back; empty for [`PauseScope::App`].
    pub client_key: String,
    /// No call before this, in Unix milliseconds.
    pub until_ms: i64,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct PauseStore {
    db: Database,
}

impl PauseStore {
    pub fn new(db: Database) -> PauseStore {
        PauseStore { db }
    }

    /// Holds back `scope`'s calls until `until_ms`; a pause already in force that ends
    /// later is kept (two answers never shorten a wait).
    pub async fn pause(&self, pause: &Pause) -> Result<(), StoreError> {
        let client_key = match pause.scope {
            PauseScope::App => "",
            PauseScope::Tenant => pause.client_key.as_str(),
        };
        with_database!(&self.db, |pool, _sql| {
            sqlx::query(
                "INSERT INTO confluence_pauses (scope, client_key, paused_until_ms, reason) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (scope, client_key) DO UPDATE SET \
                   reason = CASE WHEN excluded.paused_until_ms > confluence_pauses.paused_until_ms \
                            THEN excluded.reason ELSE confluence_pauses.reason END, \
                   paused_until_ms = CASE WHEN excluded.paused_until_ms > confluence_pauses.paused_until_ms \
                            THEN excluded.paused_until_ms ELSE confluence_pauses.paused_until_ms END",
            )
            .bind(pause.scope.as_str())
            .bind(client_key)
            .bind(pause.until_ms)
            .bind(&pause.reason)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// The pauses that end after `now_ms`, and drops those that ended (they are few: one
    /// per throttled tenant, and this runs about once a second per replica).
    pub async fn in_force(&self, now_ms: i64) -> Result<Vec<Pause>, StoreError> {
        let rows: Vec<(String, String, i64, String)> = with_database!(&self.db, |pool, _sql| {
            sqlx::query("DELETE FROM confluence_pauses WHERE paused_until_ms <= $1")
                .bind(now_ms)
                .execute(pool)
                .await?;
            sqlx::query_as(
                "SELECT scope, client_key, paused_until_ms, reason FROM confluence_pauses \
                 ORDER BY scope, client_key",
            )
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(scope, client_key, until_ms, reason)| {
                let scope = PauseScope::parse(&scope).ok_or_else(|| {
                    StoreError::CorruptRow(format!("pause scope `{scope}` is unknown"))
                })?;
                Ok(Pause {
                    scope,
                    client_key,
                    until_ms,
                    reason,
                })
            })
            .collect()
    }
}
