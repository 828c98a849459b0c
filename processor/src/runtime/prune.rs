//! Keeps `handled_events` from growing forever: records older than the retention go, a
//! bounded chunk at a time.
//!
//! A record is only needed while its event can be delivered again. Redelivery reads the
//! record from its topic (after a crash, a rebalance, or a restart from committed offsets)
//! or from the dead-letter topic (a replay carries the original event id), so the longest
//! redelivery window is the longest retention of those topics; the retention setting must
//! cover it (Kafka's default `retention.ms` is 7 days, the setting's default too).

use std::time::Duration;

use tributary_common::Config;
use tributary_common::shutdown::Shutdown;
use tributary_common::store::HandlerStore;

/// Records deleted per statement: short statements, short locks.
pub(crate) const CHUNK: u32 = 1_000;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Retention {
    /// Records younger than this are never deleted.
    pub keep: Duration,
    /// Pause between prune rounds.
    pub every: Duration,
    /// Pause between chunks of one round, so the prune does not crowd out the runtime.
    pub between_chunks: Duration,
}

impl Retention {
    pub fn from_config(config: &Config) -> Retention {
        Retention {
            keep: Duration::from_secs(config.processor_handled_retention_hours * 3600),
            every: Duration::from_secs(300),
            between_chunks: Duration::from_millis(50),
        }
    }
}

/// Deletes records older than `retention.keep` until none are left; how many it deleted.
pub(crate) async fn round(store: &HandlerStore, retention: Retention, stop: &Shutdown) -> u64 {
    let Ok(keep) = chrono::Duration::from_std(retention.keep) else {
        return 0;
    };
    let mut deleted = 0;
    loop {
        let cutoff = chrono::Utc::now() - keep;
        match store.prune_handled(cutoff, CHUNK).await {
            Ok(n) => {
                deleted += n;
                if n < u64::from(CHUNK) {
                    return deleted;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "pruning handled-event records failed; trying again later");
                return deleted;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return deleted,
            _ = tokio::time::sleep(retention.between_chunks) => {}
        }
    }
}

/// Prunes every `retention.every` until `stop` fires.
pub(crate) async fn run(store: HandlerStore, retention: Retention, stop: Shutdown) {
    loop {
        let deleted = round(&store, retention, &stop).await;
        if deleted > 0 {
            tracing::info!(deleted, "pruned handled-event records");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retention.every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_common::store::{HandledEvent, HandlerRun, StateWrites};
    use tributary_devkit::TestDatabase;

    async fn record(store: &HandlerStore, ids: &[String]) {
        let writes = StateWrites::default();
        let runs: Vec<HandlerRun<'_>> = ids
            .iter()
            .map(|id| HandlerRun {
                event: HandledEvent {
                    handler: "h",
                    event_id: id,
                    client_key: "tenant-a",
                    event_type: "page_created",
                    topic: "events",
                    partition: 0,
                    offset: 0,
                },
                writes: &writes,
            })
            .collect();
        store.commit(&runs).await.expect("commit");
    }

    #[tokio::test]
    async fn prunes_old_records_in_chunks_and_keeps_young_ones() {
        let db = TestDatabase::create().await;
        let store = HandlerStore::new(db.pool.clone());
        let old = CHUNK as usize * 2 + 17;
        let ids: Vec<String> = (0..old).map(|n| format!("old-{n}")).collect();
        record(&store, &ids).await;
        sqlx::query("UPDATE handled_events SET handled_at = now() - interval '8 days'")
            .execute(&db.pool)
            .await
            .expect("age the records");
        // Just inside the retention: must stay.
        record(&store, &["edge".to_string()]).await;
        sqlx::query(
            "UPDATE handled_events SET handled_at = now() - interval '6 days 23 hours' \
             WHERE event_id = 'edge'",
        )
        .execute(&db.pool)
        .await
        .expect("age one record");
        record(&store, &["young".to_string()]).await;

        let retention = Retention {
            keep: Duration::from_secs(7 * 24 * 3600),
            every: Duration::from_secs(3600),
            between_chunks: Duration::ZERO,
        };
        let one_chunk = store
            .prune_handled(chrono::Utc::now() - chrono::Duration::days(7), CHUNK)
            .await
            .expect("one chunk");
        assert_eq!(
            one_chunk,
            u64::from(CHUNK),
            "a statement deletes one chunk at most"
        );
        let deleted = round(&store, retention, &Shutdown::new()).await;
        assert_eq!(deleted as usize, old - CHUNK as usize);
        let left: Vec<String> =
            sqlx::query_scalar("SELECT event_id FROM handled_events ORDER BY event_id")
                .fetch_all(&db.pool)
                .await
                .expect("left");
        assert_eq!(left, ["edge", "young"]);
        assert!(
            store.is_handled("h", "young").await.expect("read"),
            "a young record still stops a redelivered event"
        );
        assert_eq!(round(&store, retention, &Shutdown::new()).await, 0);
    }
}
