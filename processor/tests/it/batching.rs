//! Batches gather: events of several partitions that arrive within the batch wait run in
//! one batch and commit in one transaction (their handled-event records share the
//! transaction's timestamp), instead of one batch per partition or per arrival.

use std::time::Duration;

use serde_json::json;
use tributary_processor::{Context, HandlerError, Processor};

use crate::support::{Harness, TOPIC, handled_count, send_all, wait_for, webhook};

const HANDLER: &str = "gathered";
const TENANTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_several_partitions_within_the_wait_commit_in_one_batch() {
    let harness = Harness::start(4).await;
    let pool = harness.pool();
    // Long enough that the spaced-out publishing below, and the mock cluster's fetch
    // delays, all fall inside it.
    let config = harness.config(&[
        ("PROCESSOR_GROUP_ID", "batching"),
        ("PROCESSOR_BATCH_WAIT_MS", "4000"),
    ]);
    let running = harness.spawn(Processor::builder(config).on_named(
        HANDLER,
        "page_*",
        |_ctx: Context| async { Ok::<(), HandlerError>(()) },
    ));
    wait_for(
        "all four partitions assigned",
        Duration::from_secs(30),
        || {
            let assigned = running.assigned().len();
            async move { assigned == 4 }
        },
    )
    .await;
    // The partitions' parked events are read first; let that happen before the events come.
    tokio::time::sleep(Duration::from_millis(600)).await;

    // One producer for all, so each event is on the broker moments after the one before.
    let producer = harness.producer();
    for tenant in 0..TENANTS {
        let event = webhook(
            &format!("tenant-{tenant}"),
            "page_updated",
            json!({"page": {"id": tenant}}),
        );
        send_all(&producer, TOPIC, &[event]).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    wait_for("every event handled", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { handled_count(&pool, HANDLER).await == TENANTS as i64 }
    })
    .await;

    let (transactions, partitions): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT handled_at), count(DISTINCT kafka_partition) \
         FROM handled_events WHERE handler = $1",
    )
    .bind(HANDLER)
    .fetch_one(&pool)
    .await
    .expect("read the handled-event records");
    let rows: Vec<(i32, String)> = sqlx::query_as(
        "SELECT kafka_partition, handled_at::text FROM handled_events \
         WHERE handler = $1 ORDER BY handled_at",
    )
    .bind(HANDLER)
    .fetch_all(&pool)
    .await
    .expect("rows");
    assert!(
        partitions >= 2,
        "the tenants' events were spread over partitions ({partitions})"
    );
    assert_eq!(
        transactions, 1,
        "events of {partitions} partitions, published 40 ms apart, committed in one batch \
         (partition, commit time): {rows:?}"
    );
    running.stop().await.expect("clean stop");
}
