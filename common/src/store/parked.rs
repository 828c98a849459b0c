//! Events parked until a retry is due: a wait too long for a worker to sit through (a
//! quota spent for minutes) keeps the event here instead of in memory, with its Kafka
//! record, so its offset can be committed and the partition moves on.
//!
//! A key's parked events run in offset order, one at a time, by whichever processor holds
//! their partition; the tenant's later records wait behind them here.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{Database, StoreError};
use crate::with_database;

/// One parked event with its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvent {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp_ms: Option<i64>,
    /// The record's tenant, for operators (`tributary tenants list`).
    pub client_key: String,
    /// The handler to resume from; `None` runs every handler (those already handled are
    /// skipped by their records).
    pub resume_handler: Option<String>,
    pub retries_used: u32,
    pub due_at_ms: i64,
    pub last_error: String,
    pub parked_at_ms: i64,
}

/// A key with parked events, as a partition's new holder needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedKey {
    pub key: Vec<u8>,
    pub events: u64,
    /// When the first of them is due.
    pub head_due_at_ms: i64,
}

type ParkedRow = (
    String,
    i32,
    i64,
    Vec<u8>,
    Option<Vec<u8>>,
    String,
    Option<i64>,
    String,
    Option<String>,
    i32,
    i64,
    String,
    i64,
);

const COLUMNS: &str = "topic, kafka_partition, kafka_offset, record_key, payload, headers, \
     timestamp_ms, client_key, resume_handler, retries_used, due_at_ms, last_error, parked_at_ms";

#[derive(Debug, Clone)]
pub struct ParkedStore {
    db: Database,
}

impl ParkedStore {
    pub fn new(db: Database) -> ParkedStore {
        ParkedStore { db }
    }

    /// Parks `events` in one transaction: all or none. An event parked again (its retry
    /// came due and failed) gets its new due time, retries and error.
    pub async fn park(&self, events: &[ParkedEvent]) -> Result<(), StoreError> {
        let encoded: Vec<String> = events.iter().map(|e| encode_headers(&e.headers)).collect();
        with_database!(&self.db, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin_write).await?;
            for (event, headers) in events.iter().zip(&encoded) {
                sqlx::query(&format!(
                    "INSERT INTO parked_events ({COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     ON CONFLICT (topic, kafka_partition, kafka_offset) DO UPDATE SET \
                       resume_handler = excluded.resume_handler, \
                       retries_used = excluded.retries_used, \
                       due_at_ms = excluded.due_at_ms, \
                       last_error = excluded.last_error"
                ))
                .bind(&event.topic)
                .bind(event.partition)
                .bind(event.offset)
                .bind(&event.key)
                .bind(&event.payload)
                .bind(headers)
                .bind(event.timestamp_ms)
                .bind(&event.client_key)
                .bind(&event.resume_handler)
                .bind(i32::try_from(event.retries_used).unwrap_or(i32::MAX))
                .bind(event.due_at_ms)
                .bind(&event.last_error)
                .bind(event.parked_at_ms)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?
        });
        Ok(())
    }

    /// The keys of a partition with parked events: how many, and when the first is due.
    pub async fn keys(&self, topic: &str, partition: i32) -> Result<Vec<ParkedKey>, StoreError> {
        let rows: Vec<(Vec<u8>, i64, i64)> = with_database!(&self.db, |pool, _sql| {
            sqlx::query_as(
                "SELECT p.record_key, count(*), \
                   (SELECT h.due_at_ms FROM parked_events h \
                    WHERE h.topic = p.topic AND h.kafka_partition = p.kafka_partition \
                      AND h.record_key = p.record_key \
                    ORDER BY h.kafka_offset LIMIT 1) \
                 FROM parked_events p WHERE p.topic = $1 AND p.kafka_partition = $2 \
                 GROUP BY p.topic, p.kafka_partition, p.record_key",
            )
            .bind(topic)
            .bind(partition)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(key, events, head_due_at_ms)| ParkedKey {
                key,
                events: u64::try_from(events).unwrap_or_default(),
                head_due_at_ms,
            })
            .collect())
    }

    /// The first parked event of a key, the one to run next.
    pub async fn head(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
    ) -> Result<Option<ParkedEvent>, StoreError> {
        let row: Option<ParkedRow> = with_database!(&self.db, |pool, _sql| {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM parked_events \
                 WHERE topic = $1 AND kafka_partition = $2 AND record_key = $3 \
                 ORDER BY kafka_offset LIMIT 1"
            ))
            .bind(topic)
            .bind(partition)
            .bind(key)
            .fetch_optional(pool)
            .await?
        });
        row.map(decode).transpose()
    }

    /// Removes a parked event that was handled or dead-lettered.
    pub async fn remove(&self, topic: &str, partition: i32, offset: i64) -> Result<(), StoreError> {
        with_database!(&self.db, |pool, _sql| {
            sqlx::query(
                "DELETE FROM parked_events \
                 WHERE topic = $1 AND kafka_partition = $2 AND kafka_offset = $3",
            )
            .bind(topic)
            .bind(partition)
            .bind(offset)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Parked events per tenant, and when each tenant's first is due.
    pub async fn by_tenant(&self) -> Result<Vec<(String, u64, i64)>, StoreError> {
        let rows: Vec<(String, i64, i64)> = with_database!(&self.db, |pool, _sql| {
            sqlx::query_as(
                "SELECT client_key, count(*), min(due_at_ms) FROM parked_events \
                 GROUP BY client_key ORDER BY client_key",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(key, n, due)| (key, u64::try_from(n).unwrap_or_default(), due))
            .collect())
    }
}

fn encode_headers(headers: &[(String, Vec<u8>)]) -> String {
    let pairs: Vec<(&str, String)> = headers
        .iter()
        .map(|(name, value)| (name.as_str(), STANDARD.encode(value)))
        .collect();
    serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".into())
}

fn decode(row: ParkedRow) -> Result<ParkedEvent, StoreError> {
    let (
        topic,
        partition,
        offset,
        key,
        payload,
        headers,
        timestamp_ms,
        client_key,
        resume_handler,
        retries_used,
        due_at_ms,
        last_error,
        parked_at_ms,
    ) = row;
    let corrupt = |what: String| StoreError::CorruptRow(format!("parked event {offset}: {what}"));
    let pairs: Vec<(String, String)> =
        serde_json::from_str(&headers).map_err(|e| corrupt(format!("headers: {e}")))?;
    let headers = pairs
        .into_iter()
        .map(|(name, value)| {
            STANDARD
                .decode(value)
                .map(|value| (name, value))
                .map_err(|e| corrupt(format!("header value: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ParkedEvent {
        topic,
        partition,
        offset,
        key,
        payload,
        headers,
        timestamp_ms,
        client_key,
        resume_handler,
        retries_used: u32::try_from(retries_used).unwrap_or_default(),
        due_at_ms,
        last_error,
        parked_at_ms,
    })
}
