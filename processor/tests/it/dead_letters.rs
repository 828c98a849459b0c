//! A permanent failure: dead-lettered with its origin, the partition moves on, and a replay
//! after the fix handles it once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::Message;
use serde_json::json;
use tributary_processor::dlq::{self, Selection, header};
use tributary_processor::{Context, HandlerError, Processor};

use crate::support::{DLQ_TOPIC, Harness, TOPIC, handled_count, wait_for, webhook};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permanent_failure_is_dead_lettered_and_replayed_once_fixed() {
    let harness = Harness::start(1).await;
    let events: Vec<_> = (0..8)
        .map(|seq| {
            webhook(
                "tenant-a",
                "page_updated",
                json!({"seq": seq, "page": {"id": seq}}),
            )
        })
        .collect();
    let poisoned = events[3].id.clone();
    harness.publish(&events).await;

    let fixed = Arc::new(AtomicBool::new(false));
    let successes = Arc::new(Mutex::new(Vec::<u64>::new()));
    let (handler_fixed, handler_successes) = (fixed.clone(), successes.clone());
    let handler = move |ctx: Context| {
        let (fixed, successes) = (handler_fixed.clone(), handler_successes.clone());
        async move {
            let seq = ctx.event().json()["seq"].as_u64().unwrap_or_default();
            if seq == 3 && !fixed.load(Ordering::SeqCst) {
                return Err(HandlerError::permanent("page 3 is broken"));
            }
            successes.lock().expect("successes").push(seq);
            Ok(())
        }
    };
    let config = harness.config(&[("PROCESSOR_MAX_ATTEMPTS", "3")]);
    let running =
        harness.spawn(Processor::builder(config.clone()).on_named("pages", "page_*", handler));
    let pool = harness.pool();
    wait_for("the seven good events", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { handled_count(&pool, "pages").await == 7 }
    })
    .await;
    assert_eq!(
        *successes.lock().expect("successes"),
        [0, 1, 2, 4, 5, 6, 7],
        "the events after the poisoned one were handled"
    );

    let letters = harness.dead_letters().await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    let get = |name: &str| crate::support::header(letter, name);
    assert_eq!(get(header::ORIGIN_TOPIC).as_deref(), Some(TOPIC));
    assert_eq!(get(header::ORIGIN_PARTITION).as_deref(), Some("0"));
    assert_eq!(get(header::ORIGIN_OFFSET).as_deref(), Some("3"));
    assert_eq!(get(header::HANDLER).as_deref(), Some("pages"));
    assert_eq!(
        get(header::ATTEMPTS).as_deref(),
        Some("1"),
        "permanent: no retries"
    );
    assert_eq!(get(header::REASON).as_deref(), Some("permanent"));
    assert!(get(header::ERROR).is_some_and(|e| e.contains("page 3 is broken")));
    assert!(get(header::DEAD_LETTERED_AT).is_some());
    assert_eq!(get("ce_id"), Some(poisoned.clone()));
    assert_eq!(letter.key(), Some(&b"tenant-a"[..]));

    let listed = dlq::list(&config, DLQ_TOPIC, Duration::from_secs(10))
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event_type.as_deref(), Some("page_updated"));
    assert_eq!(listed[0].origin_offset, Some(3));
    let summary = dlq::summarize(&listed);
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].1, 1);

    let selection = Selection {
        event_ids: vec![poisoned.clone()],
        ..Selection::default()
    };
    let dry = dlq::replay(
        &config,
        DLQ_TOPIC,
        &selection,
        true,
        Duration::from_secs(10),
    )
    .await
    .expect("dry run");
    assert_eq!((dry.selected.len(), dry.replayed), (1, 0));
    let none = Selection {
        event_type: Some("blog_*".into()),
        ..Selection::default()
    };
    let nothing = dlq::replay(&config, DLQ_TOPIC, &none, false, Duration::from_secs(10))
        .await
        .expect("empty replay");
    assert_eq!(nothing.replayed, 0);

    fixed.store(true, Ordering::SeqCst);
    let report = dlq::replay(
        &config,
        DLQ_TOPIC,
        &selection,
        false,
        Duration::from_secs(10),
    )
    .await
    .expect("replay");
    assert_eq!(report.replayed, 1);
    wait_for("the replayed event", Duration::from_secs(30), || {
        let pool = pool.clone();
        async move { handled_count(&pool, "pages").await == 8 }
    })
    .await;
    running.stop().await.expect("clean stop");

    let successes = successes.lock().expect("successes").clone();
    assert_eq!(successes.iter().filter(|s| **s == 3).count(), 1);
    assert_eq!(successes.len(), 8, "no other event ran again");
    assert_eq!(harness.dead_letters().await.len(), 1);
    let metrics = tributary_common::telemetry::metrics_handle().render();
    assert!(
        metrics.contains(
            "tributary_processor_dead_lettered_total{topic=\"events\",reason=\"permanent\"} 1"
        ),
        "{metrics}"
    );
}
