//! 20 tenants x 100 events, interleaved: each tenant's events in order, tenants in parallel.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::json;
use tributary_processor::{Context, HandlerError, Processor};

use crate::support::{Harness, wait_for, webhook};

const TENANTS: usize = 20;
const EVENTS_PER_TENANT: u64 = 100;

#[derive(Default)]
struct Log {
    seen: HashMap<String, Vec<u64>>,
    running: HashSet<String>,
    same_tenant_overlaps: usize,
    active: usize,
    max_active: usize,
    first_start: Option<Instant>,
    last_end: Option<Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_tenant_in_order_tenants_in_parallel() {
    let harness = Harness::start(4).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut events = Vec::new();
    let mut total_sleep_ms = 0;
    for seq in 0..EVENTS_PER_TENANT {
        for tenant in 0..TENANTS {
            let sleep_ms: u64 = rng.gen_range(2..=12);
            total_sleep_ms += sleep_ms;
            events.push(webhook(
                &format!("tenant-{tenant}"),
                "page_updated",
                json!({"seq": seq, "sleep_ms": sleep_ms, "page": {"id": seq}}),
            ));
        }
    }
    harness.publish(&events).await;

    let log = Arc::new(Mutex::new(Log::default()));
    let handler_log = log.clone();
    let handler = move |ctx: Context| {
        let log = handler_log.clone();
        async move {
            let tenant = ctx.event().client_key().to_string();
            let body = ctx.event().json();
            let seq = body["seq"]
                .as_u64()
                .ok_or_else(|| HandlerError::permanent("seq"))?;
            let sleep_ms = body["sleep_ms"].as_u64().unwrap_or(0);
            {
                let mut log = log.lock().expect("log");
                if !log.running.insert(tenant.clone()) {
                    log.same_tenant_overlaps += 1;
                }
                log.active += 1;
                log.max_active = log.max_active.max(log.active);
                log.first_start.get_or_insert_with(Instant::now);
            }
            tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
            let mut log = log.lock().expect("log");
            log.running.remove(&tenant);
            log.active -= 1;
            log.seen.entry(tenant).or_default().push(seq);
            log.last_end = Some(Instant::now());
            Ok(())
        }
    };
    let config = harness.config(&[("PROCESSOR_CONCURRENCY", "8")]);
    let running = harness.spawn(Processor::builder(config).on("page_updated", handler));

    let expected = TENANTS * EVENTS_PER_TENANT as usize;
    wait_for("every event handled", Duration::from_secs(120), || {
        let done = log
            .lock()
            .expect("log")
            .seen
            .values()
            .map(Vec::len)
            .sum::<usize>();
        async move { done >= expected }
    })
    .await;
    running.stop().await.expect("clean stop");

    let log = log.lock().expect("log");
    assert_eq!(log.seen.len(), TENANTS);
    let in_order: Vec<u64> = (0..EVENTS_PER_TENANT).collect();
    for (tenant, seqs) in &log.seen {
        assert_eq!(
            seqs, &in_order,
            "{tenant}'s events out of order or repeated"
        );
    }
    assert_eq!(
        log.same_tenant_overlaps, 0,
        "one tenant's events overlapped"
    );
    assert!(
        log.max_active <= 8,
        "concurrency bound exceeded: {}",
        log.max_active
    );
    assert!(log.max_active > 1, "tenants did not run in parallel");
    let (Some(first), Some(last)) = (log.first_start, log.last_end) else {
        panic!("no timings recorded");
    };
    let elapsed = last - first;
    let sleeps = Duration::from_millis(total_sleep_ms);
    println!(
        "{expected} events: handled in {elapsed:?}, sum of handler sleeps {sleeps:?}, \
         max concurrent handlers {}",
        log.max_active
    );
    assert!(
        elapsed < sleeps / 2,
        "{elapsed:?} is not well below the sum of the sleeps ({sleeps:?})"
    );
}
