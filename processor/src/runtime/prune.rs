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

    // Ages come from the real clock (a one-second retention), so the test needs no SQL of its
    // own; the exact retention edge is the store's test.
    #[tokio::test]
    async fn prunes_old_records_in_chunks_and_keeps_young_ones() {
        let db = TestDatabase::create().await;
        let store = HandlerStore::new(db.pool.clone());
        let old = CHUNK as usize * 2 + 17;
        let ids: Vec<String> = (0..old).map(|n| format!("old-{n}")).collect();
        record(&store, &ids).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        record(&store, &["young".to_string()]).await;

        let retention = Retention {
            keep: Duration::from_secs(1),
            every: Duration::from_secs(3600),
            between_chunks: Duration::ZERO,
        };
        let deleted = round(&store, retention, &Shutdown::new()).await;
        assert_eq!(deleted as usize, old, "every old record, over three chunks");
        let mut all: Vec<&str> = ids.iter().map(String::as_str).collect();
        all.push("young");
        let left = store.handled(&["h"], &all).await.expect("read");
        assert!(
            ids.iter().all(|id| !left.contains("h", id)),
            "old records are past the retention"
        );
        assert!(
            left.contains("h", "young"),
            "a young record still stops a redelivered event"
        );
        assert_eq!(round(&store, retention, &Shutdown::new()).await, 0);
    }
}
