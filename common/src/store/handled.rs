//! What handlers leave in the database: a record per (handler, event) they handled, and the
//! per-tenant key-value state they write, committed together.
//!
//! A handler's state writes commit in the same transaction as the record that it handled
//! the event. When the record exists already (another consumer got there first after a
//! rebalance), the writes are dropped, so each event changes a handler's state exactly once.
//!
//! Both reads and commits take whole batches: [`HandlerStore::handled`] answers for many
//! handlers and events in one query, and [`HandlerStore::commit`] records many runs in one
//! transaction. A single event is a batch of one.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::{Backend, Database, StoreError};
use crate::with_database;

/// Most ids bound in one statement; far below what either backend accepts (SQLite 32766
/// parameters, PostgreSQL 65535), so a huge batch is split rather than refused.
const MAX_IDS_PER_QUERY: usize = 10_000;

/// Rows per multi-row insert: 7,000 parameters for handled-event records, well inside both
/// backends' limits.
const ROWS_PER_INSERT: usize = 1_000;

/// One handler's successful run on one event, as its handled-event record keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandledEvent<'a> {
    pub handler: &'a str,
    pub event_id: &'a str,
    /// The event's tenant; the run's state writes are this tenant's.
    pub client_key: &'a str,
    pub event_type: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// Changes to one tenant's key-value state, staged until their run commits. A later change
/// of a key replaces an earlier one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateWrites {
    /// `None` deletes the key.
    changes: BTreeMap<String, Option<Value>>,
}

impl StateWrites {
    pub fn set(&mut self, key: &str, value: Value) {
        self.changes.insert(key.to_string(), Some(value));
    }

    pub fn delete(&mut self, key: &str) {
        self.changes.insert(key.to_string(), None);
    }

    /// The staged change of `key`: `Some(Some(value))` set, `Some(None)` deleted, `None`
    /// when nothing is staged for it.
    pub fn get(&self, key: &str) -> Option<Option<&Value>> {
        self.changes.get(key).map(Option::as_ref)
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Lays `later` over these changes: where both change a key, `later` wins.
    pub fn merge(&mut self, later: &StateWrites) {
        for (key, change) in &later.changes {
            self.changes.insert(key.clone(), change.clone());
        }
    }
}

/// A run to commit: its handled-event record and the state writes that go with it.
#[derive(Debug, Clone, Copy)]
pub struct HandlerRun<'a> {
    pub event: HandledEvent<'a>,
    pub writes: &'a StateWrites,
}

/// Which handlers have handled which events, as [`HandlerStore::handled`] found them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandledSet {
    /// Handler names by event id.
    by_event: HashMap<String, HashSet<String>>,
}

impl HandledSet {
    pub fn contains(&self, handler: &str, event_id: &str) -> bool {
        self.by_event
            .get(event_id)
            .is_some_and(|handlers| handlers.contains(handler))
    }

    pub fn is_empty(&self) -> bool {
        self.by_event.is_empty()
    }
}

/// Handled-event records and tenant state on one database.
#[derive(Debug, Clone)]
pub struct HandlerStore {
    db: Database,
}

/// `$first, $first+1, ...`: `count` numbered parameters.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl HandlerStore {
    /// A store on `db`: a [`Database`], or a PostgreSQL or SQLite pool.
    pub fn new(db: impl Into<Database>) -> Self {
        HandlerStore { db: db.into() }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Every (handler, event) pair among `handlers` x `event_ids` recorded as handled, in
    /// one query (one per [`MAX_IDS_PER_QUERY`] events).
    pub async fn handled(
        &self,
        handlers: &[&str],
        event_ids: &[&str],
    ) -> Result<HandledSet, StoreError> {
        let mut found = HandledSet::default();
        if handlers.is_empty() {
            return Ok(found);
        }
        for events in event_ids.chunks(MAX_IDS_PER_QUERY) {
            let rows: Vec<(String, String)> = match &self.db {
                Database::Postgres(pool) => handled_pg(pool, handlers, events).await?,
                Database::Sqlite(pool) => {
                    let query = format!(
                        "SELECT handler, event_id FROM handled_events \
                         WHERE handler IN ({}) AND event_id IN ({})",
                        placeholders(1, handlers.len()),
                        placeholders(handlers.len() + 1, events.len()),
                    );
                    let mut select = sqlx::query_as(&query);
                    for value in handlers.iter().chain(events) {
                        select = select.bind(*value);
                    }
                    select.fetch_all(pool).await?
                }
            };
            for (handler, event_id) in rows {
                found.by_event.entry(event_id).or_default().insert(handler);
            }
        }
        Ok(found)
    }

    /// True when `handler` has handled the event `event_id` before.
    pub async fn is_handled(&self, handler: &str, event_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .handled(&[handler], &[event_id])
            .await?
            .contains(handler, event_id))
    }

    /// The committed value of `key` in the tenant's state.
    pub async fn state(&self, client_key: &str, key: &str) -> Result<Option<Value>, StoreError> {
        // Values travel as JSON text, cast in SQL: no need for sqlx's `json` feature.
        let text = with_database!(&self.db, |pool, _sql| {
            sqlx::query_scalar::<_, String>(
                "SELECT CAST(value AS TEXT) FROM tenant_state \
                 WHERE client_key = $1 AND key = $2",
            )
            .bind(client_key)
            .bind(key)
            .fetch_optional(pool)
            .await?
        });
        text.map(|text| {
            serde_json::from_str(&text).map_err(|e| {
                StoreError::CorruptRow(format!("tenant state `{key}` is not JSON: {e}"))
            })
        })
        .transpose()
    }

    /// Records every run as handled and applies its state writes, all in one transaction,
    /// in order. For each run, true when it was recorded now; false when its record existed
    /// already (or an earlier run of the same call has the same handler and event), and
    /// then its writes are dropped.
    ///
    /// A batch costs a few statements, not a few per run: the records go in one insert per
    /// chunk that returns what it inserted, and the surviving writes, collapsed to the last
    /// change of each key, in one upsert and one delete per chunk (on PostgreSQL each binds
    /// arrays, so its text does not depend on the batch's size).
    pub async fn commit(&self, runs: &[HandlerRun<'_>]) -> Result<Vec<bool>, StoreError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        // Records alone in one statement need no transaction: the statement is atomic by
        // itself, and what it returns says which runs it recorded. That saves the BEGIN and
        // COMMIT round trips of every batch whose handlers wrote no state.
        if runs.len() <= ROWS_PER_INSERT && runs.iter().all(|run| run.writes.is_empty()) {
            let rows = with_database!(&self.db, |pool, _sql| {
                let mut conn = pool.acquire().await?;
                InsertRecords::insert_records(&mut *conn, runs, true)
                    .await?
                    .rows
            });
            return Ok(recorded_by(runs, &rows));
        }
        with_database!(&self.db, |pool, sql| {
            // Nearly always every run is new, and counting the rows inserted says so without
            // reading any back. When some were not (a redelivered event that another
            // consumer recorded first), the transaction starts over and finds out which.
            let mut tx = pool.begin_with(sql.begin_write).await?;
            let mut inserted = 0;
            for chunk in runs.chunks(ROWS_PER_INSERT) {
                inserted += InsertRecords::insert_records(&mut *tx, chunk, false)
                    .await?
                    .count;
            }
            let recorded = if inserted == runs.len() as u64 {
                vec![true; runs.len()]
            } else {
                tx.rollback().await?;
                tx = pool.begin_with(sql.begin_write).await?;
                let mut rows: Vec<(String, String)> = Vec::new();
                for chunk in runs.chunks(ROWS_PER_INSERT) {
                    rows.extend(
                        InsertRecords::insert_records(&mut *tx, chunk, true)
                            .await?
                            .rows,
                    );
                }
                recorded_by(runs, &rows)
            };

            // The last change of each (tenant, key) among the runs that count.
            let mut changes: BTreeMap<(&str, &str), Option<&Value>> = BTreeMap::new();
            for (run, counts) in runs.iter().zip(&recorded) {
                if *counts {
                    for (key, change) in &run.writes.changes {
                        changes.insert((run.event.client_key, key.as_str()), change.as_ref());
                    }
                }
            }
            let sets: Vec<(&str, &str, String)> = changes
                .iter()
                .filter_map(|((client_key, key), change)| {
                    change.map(|value| (*client_key, *key, value.to_string()))
                })
                .collect();
            let deletes: Vec<(&str, &str)> = changes
                .iter()
                .filter(|(_, change)| change.is_none())
                .map(|((client_key, key), _)| (*client_key, *key))
                .collect();
            for chunk in sets.chunks(ROWS_PER_INSERT) {
                WriteState::upsert_state(&mut *tx, chunk).await?;
            }
            for chunk in deletes.chunks(ROWS_PER_INSERT) {
                WriteState::delete_state(&mut *tx, chunk).await?;
            }
            tx.commit().await?;
            Ok(recorded)
        })
    }

    /// Deletes at most `limit` handled-event records written before `cutoff`; how many it
    /// deleted. Small chunks keep each statement short, so the prune never holds locks the
    /// runtime's commits would wait for.
    pub async fn prune_handled(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        // Both backends compare the column with the cutoff in its own type: PostgreSQL casts
        // the text to a timestamp, SQLite stores the same ISO form as text.
        let cutoff_param = match self.db.backend() {
            Backend::Postgres => "CAST($1 AS TIMESTAMPTZ)",
            Backend::Sqlite => "$1",
        };
        let query = format!(
            "DELETE FROM handled_events WHERE (handler, event_id) IN \
             (SELECT handler, event_id FROM handled_events WHERE handled_at < {cutoff_param} LIMIT $2)"
        );
        let cutoff = cutoff.to_rfc3339_opts(SecondsFormat::Millis, true);
        let deleted = with_database!(&self.db, |pool, _sql| {
            sqlx::query(&query)
                .bind(&cutoff)
                .bind(i64::from(limit))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted)
    }
}

/// For each run, true when `inserted` (the (handler, event id) pairs a statement inserted)
/// holds its record; a later run of the same pair counts as not recorded.
fn recorded_by(runs: &[HandlerRun<'_>], inserted: &[(String, String)]) -> Vec<bool> {
    let mut new: HashSet<(&str, &str)> = inserted
        .iter()
        .map(|(handler, event_id)| (handler.as_str(), event_id.as_str()))
        .collect();
    runs.iter()
        .map(|run| new.remove(&(run.event.handler, run.event.event_id)))
        .collect()
}

/// The handled-before query on PostgreSQL: two arrays, so the statement text is the same
/// whatever the batch's size, and one primary-key look-up per (handler, event) pair. The
/// look-up sits in a `LATERAL` subquery with `LIMIT 1` (the key is unique, so the limit
/// changes nothing) because the planner cannot turn that into a hash join: written as a
/// plain join, a batch of a hundred events or more on a table without fresh statistics
/// (autovacuum off or behind) was planned as a scan of every record of each handler, 80 ms
/// a batch at 150,000 records. With the join's shape fixed the statement can stay prepared.
pub(super) const HANDLED_BEFORE_PG: &str = "SELECT k.handler, e.event_id \
     FROM UNNEST($1::text[]) AS k(handler) \
     CROSS JOIN UNNEST($2::text[]) AS e(event_id) \
     CROSS JOIN LATERAL (SELECT 1 FROM handled_events h \
                         WHERE h.handler = k.handler AND h.event_id = e.event_id \
                         LIMIT 1) AS found";

async fn handled_pg(
    pool: &sqlx::PgPool,
    handlers: &[&str],
    event_ids: &[&str],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(HANDLED_BEFORE_PG)
        .bind(handlers)
        .bind(event_ids)
        .fetch_all(pool)
        .await
}

/// Applying a chunk of collapsed state changes (one per tenant and key), in each backend's
/// cheapest form.
trait WriteState {
    async fn upsert_state(&mut self, sets: &[(&str, &str, String)]) -> Result<(), sqlx::Error>;
    async fn delete_state(&mut self, keys: &[(&str, &str)]) -> Result<(), sqlx::Error>;
}

impl WriteState for sqlx::PgConnection {
    /// Three arrays: one prepared statement whatever the number of keys.
    async fn upsert_state(&mut self, sets: &[(&str, &str, String)]) -> Result<(), sqlx::Error> {
        let client_keys: Vec<&str> = sets.iter().map(|(client_key, _, _)| *client_key).collect();
        let keys: Vec<&str> = sets.iter().map(|(_, key, _)| *key).collect();
        let values: Vec<&str> = sets.iter().map(|(_, _, value)| value.as_str()).collect();
        sqlx::query(
            "INSERT INTO tenant_state (client_key, key, value) \
             SELECT client_key, key, CAST(value AS jsonb) \
             FROM UNNEST($1::text[], $2::text[], $3::text[]) AS s(client_key, key, value) \
             ON CONFLICT (client_key, key) DO UPDATE \
             SET value = EXCLUDED.value, updated_at = now()",
        )
        .bind(client_keys)
        .bind(keys)
        .bind(values)
        .execute(self)
        .await?;
        Ok(())
    }

    /// An unnamed statement, planned for the values it is given: a prepared statement's
    /// generic plan is made without the arrays' sizes. Deletes are rare; the hot
    /// handled-before query is shaped so that no plan can scan (see [`handled_pg`]).
    async fn delete_state(&mut self, keys: &[(&str, &str)]) -> Result<(), sqlx::Error> {
        let client_keys: Vec<&str> = keys.iter().map(|(client_key, _)| *client_key).collect();
        let names: Vec<&str> = keys.iter().map(|(_, key)| *key).collect();
        sqlx::query(
            "DELETE FROM tenant_state t \
             USING UNNEST($1::text[], $2::text[]) AS d(client_key, key) \
             WHERE t.client_key = d.client_key AND t.key = d.key",
        )
        .bind(client_keys)
        .bind(names)
        .persistent(false)
        .execute(self)
        .await?;
        Ok(())
    }
}

impl WriteState for sqlx::SqliteConnection {
    async fn upsert_state(&mut self, sets: &[(&str, &str, String)]) -> Result<(), sqlx::Error> {
        let rows: Vec<String> = (0..sets.len())
            .map(|i| format!("(${}, ${}, ${})", i * 3 + 1, i * 3 + 2, i * 3 + 3))
            .collect();
        let statement = format!(
            "INSERT INTO tenant_state (client_key, key, value) VALUES {} \
             ON CONFLICT (client_key, key) DO UPDATE \
             SET value = EXCLUDED.value, updated_at = {now}",
            rows.join(", "),
            now = super::Dialect::SQLITE.now
        );
        let mut upsert = sqlx::query(&statement);
        for (client_key, key, value) in sets {
            upsert = upsert.bind(*client_key).bind(*key).bind(value);
        }
        upsert.execute(self).await?;
        Ok(())
    }

    async fn delete_state(&mut self, keys: &[(&str, &str)]) -> Result<(), sqlx::Error> {
        let pairs: Vec<String> = (0..keys.len())
            .map(|i| format!("(${}, ${})", i * 2 + 1, i * 2 + 2))
            .collect();
        let statement = format!(
            "DELETE FROM tenant_state WHERE (client_key, key) IN (VALUES {})",
            pairs.join(", ")
        );
        let mut delete = sqlx::query(&statement);
        for (client_key, key) in keys {
            delete = delete.bind(*client_key).bind(*key);
        }
        delete.execute(self).await?;
        Ok(())
    }
}

/// What inserting a chunk of handled-event records did.
#[derive(Default)]
struct Inserted {
    /// Records inserted (the others existed already).
    count: u64,
    /// The (handler, event id) of each inserted record, when asked for.
    rows: Vec<(String, String)>,
}

/// Inserting a chunk of handled-event records in each backend's cheapest form, counting
/// what was new and, with `returning`, saying which.
trait InsertRecords {
    async fn insert_records(
        &mut self,
        runs: &[HandlerRun<'_>],
        returning: bool,
    ) -> Result<Inserted, sqlx::Error>;
}

impl InsertRecords for sqlx::PgConnection {
    /// Seven arrays rather than seven parameters per record: one statement whatever the
    /// chunk's size, so it stays prepared, and seven values to encode instead of 7 x N.
    async fn insert_records<'a>(
        &mut self,
        runs: &[HandlerRun<'a>],
        returning: bool,
    ) -> Result<Inserted, sqlx::Error> {
        use sqlx::Arguments as _;
        const INSERT: &str = "INSERT INTO handled_events \
             (handler, event_id, client_key, event_type, topic, kafka_partition, kafka_offset) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                                  $6::int4[], $7::int8[]) \
             ON CONFLICT DO NOTHING";
        let column = |f: fn(HandledEvent<'a>) -> &'a str| -> Vec<&'a str> {
            runs.iter().map(|run| f(run.event)).collect()
        };
        let mut arguments = sqlx::postgres::PgArguments::default();
        for text in [
            column(|e| e.handler),
            column(|e| e.event_id),
            column(|e| e.client_key),
            column(|e| e.event_type),
            column(|e| e.topic),
        ] {
            arguments.add(text).map_err(sqlx::Error::Encode)?;
        }
        let partitions: Vec<i32> = runs.iter().map(|run| run.event.partition).collect();
        let offsets: Vec<i64> = runs.iter().map(|run| run.event.offset).collect();
        arguments.add(partitions).map_err(sqlx::Error::Encode)?;
        arguments.add(offsets).map_err(sqlx::Error::Encode)?;
        if returning {
            let statement = format!("{INSERT} RETURNING handler, event_id");
            let rows: Vec<(String, String)> = sqlx::query_as_with(&statement, arguments)
                .fetch_all(self)
                .await?;
            return Ok(Inserted {
                count: rows.len() as u64,
                rows,
            });
        }
        let done = sqlx::query_with(INSERT, arguments).execute(self).await?;
        Ok(Inserted {
            count: done.rows_affected(),
            rows: Vec::new(),
        })
    }
}

impl InsertRecords for sqlx::SqliteConnection {
    /// Always returning what it inserted: the development backend does not need the
    /// cheaper form.
    async fn insert_records(
        &mut self,
        runs: &[HandlerRun<'_>],
        returning: bool,
    ) -> Result<Inserted, sqlx::Error> {
        let rows: Vec<String> = (0..runs.len())
            .map(|i| format!("({})", placeholders(i * 7 + 1, 7)))
            .collect();
        let statement = format!(
            "INSERT INTO handled_events \
             (handler, event_id, client_key, event_type, topic, kafka_partition, kafka_offset) \
             VALUES {} ON CONFLICT DO NOTHING RETURNING handler, event_id",
            rows.join(", ")
        );
        let mut insert = sqlx::query_as::<_, (String, String)>(&statement);
        for run in runs {
            let event = &run.event;
            insert = insert
                .bind(event.handler)
                .bind(event.event_id)
                .bind(event.client_key)
                .bind(event.event_type)
                .bind(event.topic)
                .bind(event.partition)
                .bind(event.offset);
        }
        let rows = insert.fetch_all(self).await?;
        Ok(Inserted {
            count: rows.len() as u64,
            rows: if returning { rows } else { Vec::new() },
        })
    }
}
