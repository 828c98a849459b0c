//! Transient failures are retried in place; undecodable records go straight to the
//! dead-letter topic.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tributary_processor::dlq::header;
use tributary_processor::{Context, HandlerError, Processor, ProcessorError};

use crate::support::{Harness, handled_count, wait_for, webhook};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transient_failures_succeed_on_the_third_attempt() {
    let harness = Harness::start(1).await;
    let event = webhook("tenant-a", "page_created", json!({"page": {"id": 1}}));
    harness.publish(std::slice::from_ref(&event)).await;

    let attempts = Arc::new(Mutex::new(Vec::<u32>::new()));
    let seen = attempts.clone();
    let handler = move |ctx: Context| {
        let seen = seen.clone();
        async move {
            seen.lock().expect("attempts").push(ctx.attempt());
            if ctx.attempt() < 3 {
                return Err(HandlerError::transient("Confluence answered 503"));
            }
            ctx.state().set("created", &ctx.event().id())?;
            Ok(())
        }
    };
    let config = harness.config(&[("PROCESSOR_MAX_ATTEMPTS", "5")]);
    let running =
        harness.spawn(Processor::builder(config).on_named("flaky", "page_created", handler));
    let pool = harness.pool();
    wait_for("the event handled", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { handled_count(&pool, "flaky").await == 1 }
    })
    .await;
    running.stop().await.expect("clean stop");

    assert_eq!(*attempts.lock().expect("attempts"), [1, 2, 3]);
    assert!(harness.dead_letters().await.is_empty());
    let stored: String = sqlx::query_scalar(
        "SELECT value #>> '{}' FROM tenant_state WHERE client_key = 'tenant-a' AND key = 'created'",
    )
    .fetch_one(&pool)
    .await
    .expect("state written by the successful attempt");
    assert_eq!(stored, event.id);
    let metrics = tributary_common::telemetry::metrics_handle().render();
    assert!(
        metrics.contains("tributary_processor_handler_retries_total{handler=\"flaky\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecodable_records_go_straight_to_the_dead_letter_topic() {
    let harness = Harness::start(1).await;
    harness.publish_raw("junk", b"not an envelope").await;
    let mut not_json = webhook("tenant-a", "page_created", json!({}));
    not_json.data = bytes::Bytes::from_static(b"{not json");
    let good = webhook("tenant-a", "page_created", json!({"page": {"id": 2}}));
    harness.publish(&[not_json.clone(), good]).await;

    let calls = Arc::new(Mutex::new(0));
    let counted = calls.clone();
    let handler = move |_ctx: Context| {
        let counted = counted.clone();
        async move {
            *counted.lock().expect("calls") += 1;
            Ok(())
        }
    };
    let config = harness.config(&[]);
    let running = harness.spawn(Processor::builder(config).on_named("pages", "page_*", handler));
    let pool = harness.pool();
    wait_for("the good event handled", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { handled_count(&pool, "pages").await == 1 }
    })
    .await;
    running.stop().await.expect("clean stop");

    assert_eq!(
        *calls.lock().expect("calls"),
        1,
        "no handler saw a bad record"
    );
    let letters = harness.dead_letters().await;
    assert_eq!(letters.len(), 2);
    let mut offsets = Vec::new();
    for letter in &letters {
        let get = |name: &str| crate::support::header(letter, name);
        assert_eq!(get(header::REASON).as_deref(), Some("undecodable"));
        assert_eq!(get(header::ATTEMPTS).as_deref(), Some("0"));
        assert_eq!(get(header::ORIGIN_TOPIC).as_deref(), Some("events"));
        offsets.push(get(header::ORIGIN_OFFSET).unwrap_or_default());
        if get(header::ORIGIN_OFFSET).as_deref() == Some("1") {
            assert_eq!(get("ce_id"), Some(not_json.id.clone()));
        }
    }
    offsets.sort();
    assert_eq!(offsets, ["0", "1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_failure_guard_stops_the_consumer_instead_of_draining_the_topic() {
    let harness = Harness::start(1).await;
    let events: Vec<_> = (0..6)
        .map(|i| webhook("tenant-a", "page_updated", json!({"page": {"id": i}})))
        .collect();
    harness.publish(&events).await;
    let broken = |_ctx: Context| async { Err(HandlerError::permanent("bad deploy")) };
    // Window 4, ratio 0.5: the third failure in a row is one too many.
    let config = harness.config(&[
        ("PROCESSOR_GUARD_WINDOW", "4"),
        ("PROCESSOR_GUARD_MAX_FAILURE_RATIO", "0.5"),
    ]);
    let running = harness.spawn(Processor::builder(config).on_named("broken", "page_*", broken));
    let stopped = running.join(Duration::from_secs(60)).await;
    assert!(
        matches!(
            stopped,
            Err(ProcessorError::GuardTripped {
                failures: 3,
                window: 4
            })
        ),
        "{stopped:?}"
    );
    assert_eq!(
        harness.dead_letters().await.len(),
        2,
        "only what the guard allowed"
    );
}
