//! Two processors in one group share the partitions and together handle every event once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tributary_processor::{Context, HandlerError, Processor};

use crate::support::{Harness, handled_count, wait_for, webhook};

type Calls = Arc<Mutex<HashMap<String, usize>>>;

fn counting(calls: Calls) -> impl Fn(Context) -> std::future::Ready<Result<(), HandlerError>> {
    move |ctx: Context| {
        *calls
            .lock()
            .expect("calls")
            .entry(ctx.event().id().to_string())
            .or_default() += 1;
        std::future::ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processors_share_the_partitions() {
    let harness = Harness::start(4).await;
    let (calls_a, calls_b): (Calls, Calls) = Default::default();
    let config = harness.config(&[("PROCESSOR_CONCURRENCY", "4")]);
    let a = harness.spawn(Processor::builder(config.clone()).on_named(
        "pages",
        "page_*",
        counting(calls_a.clone()),
    ));
    let b = harness.spawn(Processor::builder(config).on_named(
        "pages",
        "page_*",
        counting(calls_b.clone()),
    ));
    wait_for(
        "both members to hold partitions",
        Duration::from_secs(60),
        || {
            let (held_a, held_b) = (a.assigned(), b.assigned());
            async move {
                !held_a.is_empty()
                    && !held_b.is_empty()
                    && held_a.len() + held_b.len() == 4
                    && held_a.iter().all(|p| !held_b.contains(p))
            }
        },
    )
    .await;

    let events: Vec<_> = (0..400)
        .map(|i| {
            webhook(
                &format!("tenant-{}", i % 20),
                "page_updated",
                json!({"page": {"id": i}}),
            )
        })
        .collect();
    harness.publish(&events).await;
    let pool = harness.pool();
    wait_for("every event handled", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { handled_count(&pool, "pages").await == 400 }
    })
    .await;
    a.stop().await.expect("a stops cleanly");
    b.stop().await.expect("b stops cleanly");

    let (calls_a, calls_b) = (calls_a.lock().expect("a"), calls_b.lock().expect("b"));
    assert!(
        !calls_a.is_empty() && !calls_b.is_empty(),
        "both members handled events"
    );
    for event in &events {
        let runs = calls_a.get(&event.id).copied().unwrap_or(0)
            + calls_b.get(&event.id).copied().unwrap_or(0);
        assert_eq!(runs, 1, "event {} ran {runs} times", event.id);
    }
}
