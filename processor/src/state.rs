//! Per-tenant key-value state and the handled-event records it commits with.
//!
//! A handler's writes are buffered in its context and applied by the runtime in the same
//! transaction that records the (handler, event) pair as handled. If the record already
//! exists (another consumer got there first after a rebalance), the writes are dropped, so
//! each event changes a handler's state exactly once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tributary_common::store::Database;
use tributary_common::with_database;

use crate::event::Event;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("state value is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// One tenant's key-value state, as a handler sees it: reads see the handler's own writes.
#[derive(Clone)]
pub struct TenantState {
    db: Database,
    client_key: String,
    /// `None` marks a deletion.
    writes: Arc<Mutex<BTreeMap<String, Option<Value>>>>,
}

impl TenantState {
    pub(crate) fn new(db: Database, client_key: &str) -> Self {
        TenantState {
            db,
            client_key: client_key.to_string(),
            writes: Arc::default(),
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StateError> {
        let pending = self
            .writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned();
        let value = match pending {
            Some(value) => value,
            // Values travel as JSON text, cast in SQL: no need for sqlx's `json` feature.
            None => {
                let text = with_database!(&self.db, |pool, _sql| {
                    sqlx::query_scalar::<_, String>(
                        "SELECT CAST(value AS TEXT) FROM tenant_state \
                         WHERE client_key = $1 AND key = $2",
                    )
                    .bind(&self.client_key)
                    .bind(key)
                    .fetch_optional(pool)
                    .await?
                });
                text.map(|t| serde_json::from_str(&t)).transpose()?
            }
        };
        Ok(value.map(serde_json::from_value).transpose()?)
    }

    /// Stages `value` under `key`; it is stored when the handler succeeds.
    pub fn set<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StateError> {
        let value = serde_json::to_value(value)?;
        self.stage(key, Some(value));
        Ok(())
    }

    /// Stages the removal of `key`.
    pub fn delete(&self, key: &str) {
        self.stage(key, None);
    }

    fn stage(&self, key: &str, value: Option<Value>) {
        self.writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_string(), value);
    }

    fn take_writes(&self) -> BTreeMap<String, Option<Value>> {
        std::mem::take(&mut *self.writes.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// True when `handler` has handled the event `event_id` before.
pub(crate) async fn is_handled(
    db: &Database,
    handler: &str,
    event_id: &str,
) -> Result<bool, sqlx::Error> {
    with_database!(db, |pool, _sql| {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM handled_events WHERE handler = $1 AND event_id = $2)",
        )
        .bind(handler)
        .bind(event_id)
        .fetch_one(pool)
        .await
    })
}

/// Records `event` as handled by `handler` and applies the state writes, in one
/// transaction. False (and nothing applied) when the record existed already.
pub(crate) async fn commit_handled(
    db: &Database,
    handler: &str,
    event: &Event,
    state: &TenantState,
) -> Result<bool, sqlx::Error> {
    let writes = state.take_writes();
    let origin = event.origin();
    with_database!(db, |pool, sql| {
        let mut tx = pool.begin_with(sql.begin_write).await?;
        let inserted = sqlx::query(
            "INSERT INTO handled_events \
             (handler, event_id, client_key, event_type, topic, kafka_partition, kafka_offset) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(handler)
        .bind(event.id())
        .bind(event.client_key())
        .bind(event.name())
        .bind(&origin.topic)
        .bind(origin.partition)
        .bind(origin.offset)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let upsert = format!(
            "INSERT INTO tenant_state (client_key, key, value) VALUES ($1, $2, $3{json}) \
             ON CONFLICT (client_key, key) DO UPDATE \
             SET value = EXCLUDED.value, updated_at = {now}",
            json = sql.json_cast,
            now = sql.now
        );
        for (key, value) in writes {
            match value {
                Some(value) => {
                    sqlx::query(&upsert)
                        .bind(&state.client_key)
                        .bind(&key)
                        .bind(value.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                None => {
                    sqlx::query("DELETE FROM tenant_state WHERE client_key = $1 AND key = $2")
                        .bind(&state.client_key)
                        .bind(&key)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(true)
    })
}

#[cfg(test)]
mod tests;
