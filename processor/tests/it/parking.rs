//! Long waits park: a retry due later than a worker waits leaves the worker and the
//! partition free, comes back when due in its tenant's order, and one event never sends
//! more requests than its retry budget allows.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use tributary_common::connect::LifecyclePayload;
use tributary_common::shutdown::Shutdown;
use tributary_common::store::TenantStore;
use tributary_devkit::confluence::{
    Answers, Fault, FaultSpan, Scripted, Simulator, SimulatorSettings,
};
use tributary_devkit::test_keyring;
use tributary_processor::{Context, Handler, HandlerError, Processor};

use crate::support::{Harness, handled_count, wait_for, webhook};

const APP_KEY: &str = "com.example.tributary";
const SECRET: &str = "a-shared-secret-of-reasonable-length-0123456789";
/// The tenant whose Confluence calls are rate limited.
const LIMITED: &str = "tenant-limited";

/// A simulated Confluence that echoes requests, with `LIMITED` installed on it.
async fn site(harness: &Harness, stop: &Shutdown) -> Simulator {
    site_of(harness, stop, &[LIMITED]).await
}

/// A simulated Confluence that echoes requests, with `tenants` installed on it.
async fn site_of(harness: &Harness, stop: &Shutdown, tenants: &[&str]) -> Simulator {
    let confluence = Simulator::start(
        SimulatorSettings::new(APP_KEY).answering(Answers::Echo),
        stop.clone(),
    )
    .await
    .expect("simulated Confluence");
    for tenant in tenants {
        confluence.register(tenant, SECRET);
        let install = LifecyclePayload::parse(
            json!({
                "key": APP_KEY, "clientKey": tenant, "sharedSecret": SECRET,
                "baseUrl": confluence.base_url(), "eventType": "installed",
            })
            .to_string()
            .as_bytes(),
        )
        .expect("install body");
        TenantStore::new(harness.pool(), test_keyring())
            .record_install(&install, "ingest-install")
            .await
            .expect("installed");
    }
    confluence
}

/// A handler that calls Confluence for `LIMITED`'s events and only records the others;
/// each success appends `(tenant, page id)` to the returned list.
/// The `(tenant, page id)` of each event a handler finished, in the order it finished.
type Finished = Arc<Mutex<Vec<(String, i64)>>>;

fn calling_handler() -> (impl Handler, Finished) {
    let done = Arc::new(Mutex::new(Vec::new()));
    let seen = done.clone();
    let handler = move |ctx: Context| {
        let seen = seen.clone();
        async move {
            let tenant = ctx.event().client_key().to_string();
            let page = ctx.event().json()["page"]["id"].as_i64().unwrap_or(-1);
            if tenant == LIMITED || tenant.starts_with("calling-") {
                ctx.confluence()?
                    .get_json::<Value>(&format!("/api/v2/pages/{page}"), &[])
                    .await?;
            }
            seen.lock().expect("seen").push((tenant, page));
            Ok::<(), HandlerError>(())
        }
    };
    (handler, done)
}

fn page(tenant: &str, id: i64) -> tributary_common::envelope::Envelope {
    webhook(tenant, "page_created", json!({"page": {"id": id}}))
}

async fn parked(pool: &PgPool) -> Vec<(String, i64, Option<String>)> {
    sqlx::query_as(
        "SELECT client_key, due_at_ms, resume_handler FROM parked_events ORDER BY kafka_offset",
    )
    .fetch_all(pool)
    .await
    .expect("parked events")
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_300_second_retry_after_parks_the_event_and_other_tenants_keep_flowing() {
    let harness = Harness::start(1).await;
    let stop = Shutdown::new();
    let confluence = site(&harness, &stop).await;
    confluence.enqueue(
        Scripted::status(429)
            .header("Retry-After", "300")
            .header("RateLimit-Reason", "confluence-quota-tenant-based"),
    );
    // One worker and one partition: had the wait held the worker or the partition, no
    // other event could run for five minutes.
    let settings = [
        ("TENANT_HOST_ALLOWLIST", "127.0.0.1"),
        ("PROCESSOR_CONCURRENCY", "1"),
    ];
    let mut events = vec![page(LIMITED, 1)];
    events.extend((0..20).map(|i| page(&format!("tenant-{}", i % 4), 100 + i)));
    harness.publish(&events).await;

    let (handler, done) = calling_handler();
    let running = harness
        .spawn(Processor::builder(harness.config(&settings)).on_named("calls", "page_*", handler));
    let pool = harness.pool();
    wait_for(
        "the other tenants' events handled",
        Duration::from_secs(60),
        || {
            let pool = pool.clone();
            async move { handled_count(&pool, "calls").await == 20 }
        },
    )
    .await;
    let rows = parked(&pool).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (tenant, due_at_ms, handler) = &rows[0];
    assert_eq!(tenant, LIMITED);
    assert_eq!(handler.as_deref(), Some("calls"));
    assert!(
        *due_at_ms - now_ms() > 250_000,
        "due after the 300 s Confluence asked for"
    );

    // A later event of the tenant waits behind the parked one, in the database.
    harness.publish(&[page(LIMITED, 2)]).await;
    wait_for(
        "the later event parked behind",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            async move { parked(&pool).await.len() == 2 }
        },
    )
    .await;
    assert_eq!(
        confluence.hits(),
        1,
        "nothing was sent again before it is due"
    );
    assert!(
        done.lock().expect("done").iter().all(|(t, _)| t != LIMITED),
        "the rate-limited tenant's events did not run"
    );
    let metrics = tributary_common::telemetry::metrics_handle().render();
    assert!(
        metrics.contains("tributary_processor_events_parked_total{reason=\"retry\"}"),
        "{metrics}"
    );
    running.stop().await.expect("clean stop");

    // Their offsets are committed and they wait in the database: a new processor neither
    // loses them nor runs them early.
    let (handler, _) = calling_handler();
    let running = harness
        .spawn(Processor::builder(harness.config(&settings)).on_named("calls", "page_*", handler));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(parked(&pool).await.len(), 2);
    assert_eq!(confluence.hits(), 1);
    assert_eq!(handled_count(&pool, "calls").await, 20);
    running.stop().await.expect("clean stop");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parked_event_comes_back_when_due_and_its_tenant_keeps_its_order() {
    let harness = Harness::start(1).await;
    let stop = Shutdown::new();
    let confluence = site(&harness, &stop).await;
    confluence.enqueue(
        Scripted::status(429)
            .header("Retry-After", "2")
            .header("RateLimit-Reason", "confluence-quota-tenant-based"),
    );
    let settings = [
        ("TENANT_HOST_ALLOWLIST", "127.0.0.1"),
        ("PROCESSOR_PARK_AFTER_MS", "500"),
    ];
    harness
        .publish(&[
            page(LIMITED, 1),
            page(LIMITED, 2),
            page("tenant-other", 10),
            page(LIMITED, 3),
        ])
        .await;
    let (handler, done) = calling_handler();
    let running = harness
        .spawn(Processor::builder(harness.config(&settings)).on_named("calls", "page_*", handler));
    let pool = harness.pool();
    wait_for("every event handled", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { handled_count(&pool, "calls").await == 4 }
    })
    .await;
    running.stop().await.expect("clean stop");

    let done = done.lock().expect("done").clone();
    let limited: Vec<i64> = done
        .iter()
        .filter(|(t, _)| t == LIMITED)
        .map(|(_, p)| *p)
        .collect();
    assert_eq!(
        limited,
        [1, 2, 3],
        "the tenant's order held across the park"
    );
    assert_eq!(
        done.first(),
        Some(&("tenant-other".to_string(), 10)),
        "the other tenant did not wait for the parked one"
    );
    assert!(parked(&pool).await.is_empty(), "nothing is left parked");
    assert_eq!(
        confluence.hits(),
        4,
        "one rate-limited call, then one call per event"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_sends_at_most_its_retry_budget_of_requests() {
    let harness = Harness::start(1).await;
    let stop = Shutdown::new();
    let confluence = site(&harness, &stop).await;
    confluence.misbehave(
        Fault::unavailable(None),
        FaultSpan::For(Duration::from_secs(3600)),
    );
    let settings = [
        ("TENANT_HOST_ALLOWLIST", "127.0.0.1"),
        ("PROCESSOR_MAX_ATTEMPTS", "4"),
    ];
    harness.publish(&[page(LIMITED, 1)]).await;
    let (handler, _) = calling_handler();
    let running = harness
        .spawn(Processor::builder(harness.config(&settings)).on_named("calls", "page_*", handler));
    let mut dead = Vec::new();
    for _ in 0..120 {
        dead = harness.dead_letters().await;
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    running.stop().await.expect("clean stop");
    assert_eq!(
        dead.len(),
        1,
        "the event was dead-lettered once its budget was spent"
    );
    // Client retries and handler retries share the one budget: four attempts in all, not
    // four requests per handler attempt.
    assert_eq!(confluence.hits(), 4);
    let metrics = tributary_common::telemetry::metrics_handle().render();
    assert!(
        metrics.contains("tributary_processor_retry_budget_exhausted_total"),
        "{metrics}"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_pauses_hold_across_two_processor_replicas_tenant_or_app_wide() {
    const A: &str = "calling-a";
    const B: &str = "calling-b";
    const C: &str = "calling-c";
    const SECOND_TOPIC: &str = "events-second";
    let harness = Harness::start(1).await;
    harness.kafka.create_topic(SECOND_TOPIC, 1);
    let stop = Shutdown::new();
    let confluence = site_of(&harness, &stop, &[A, B, C]).await;
    let pool = harness.pool();
    // Two replicas sharing the database: each consumes a topic of its own, so the test
    // decides which one sees which event.
    let (first_handler, _) = calling_handler();
    let first = harness.spawn(
        Processor::builder(harness.config(&[("TENANT_HOST_ALLOWLIST", "127.0.0.1")])).on_named(
            "calls",
            "page_*",
            first_handler,
        ),
    );
    let (second_handler, second_done) = calling_handler();
    let second = harness.spawn(
        Processor::builder(harness.config(&[
            ("TENANT_HOST_ALLOWLIST", "127.0.0.1"),
            ("PROCESSOR_TOPICS", SECOND_TOPIC),
            ("PROCESSOR_GROUP_ID", "second-replica"),
        ]))
        .on_named("calls", "page_*", second_handler),
    );
    let parked_of = |tenant: &'static str, count: usize| {
        let pool = pool.clone();
        move || {
            let pool = pool.clone();
            async move {
                parked(&pool)
                    .await
                    .iter()
                    .filter(|(t, _, _)| t == tenant)
                    .count()
                    == count
            }
        }
    };

    // The first replica spends tenant A's quota.
    confluence.enqueue(
        Scripted::status(429)
            .header("Retry-After", "300")
            .header("RateLimit-Reason", "confluence-quota-tenant-based"),
    );
    harness.publish(&[page(A, 1)]).await;
    wait_for(
        "A's event parked by the first replica",
        Duration::from_secs(60),
        parked_of(A, 1),
    )
    .await;
    // Pauses reach the other replica within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    harness
        .publish_to(SECOND_TOPIC, &[page(A, 2), page(B, 3)])
        .await;
    wait_for(
        "B handled by the second replica",
        Duration::from_secs(60),
        || {
            let done = second_done.clone();
            async move { done.lock().expect("done").iter().any(|(t, _)| t == B) }
        },
    )
    .await;
    wait_for(
        "A's second event parked",
        Duration::from_secs(30),
        parked_of(A, 2),
    )
    .await;
    assert_eq!(
        confluence.hits(),
        2,
        "the second replica sent nothing for the paused tenant A, and B's call"
    );

    // The first replica spends the app's global quota: every tenant waits, everywhere.
    confluence.enqueue(
        Scripted::status(429)
            .header("Retry-After", "300")
            .header("RateLimit-Reason", "confluence-quota-global-based"),
    );
    harness.publish(&[page(C, 4)]).await;
    wait_for(
        "C's event parked by the first replica",
        Duration::from_secs(60),
        parked_of(C, 1),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    harness.publish_to(SECOND_TOPIC, &[page(B, 5)]).await;
    wait_for(
        "B's event parked by the second replica",
        Duration::from_secs(60),
        parked_of(B, 1),
    )
    .await;
    assert_eq!(
        confluence.hits(),
        3,
        "nothing was sent past the global pause"
    );
    let (_, due_at_ms, _) = parked(&pool)
        .await
        .into_iter()
        .find(|(t, _, _)| t == B)
        .expect("B parked");
    assert!(
        due_at_ms - now_ms() > 250_000,
        "B waits for the app's pause"
    );
    first.stop().await.expect("clean stop");
    second.stop().await.expect("clean stop");
    stop.cancel();
}
