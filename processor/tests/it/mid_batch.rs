//! A processor killed in the middle of a batch, after some of its handlers ran and before
//! the batch committed: a second processor runs every event again whose run was not
//! committed, so each event's state is written once and none is skipped.
//!
//! The kill is an abort of the processor's task while one handler of the batch hangs: that
//! pins the moment (handlers ran, the commit has not happened) exactly, which a signal sent
//! to a child process at a random time cannot. What the abort leaves behind is what a crash
//! leaves: nothing past the last await point runs, no commit, no stored offset.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tributary_processor::{Context, HandlerError, Processor};

use crate::support::{Harness, handled_count, wait_for, webhook};

const HANDLER: &str = "seen";
const TENANTS: usize = 8;
const PER_TENANT: usize = 10;
const STUCK_TENANT: &str = "tenant-7";
const STUCK_SEQ: u64 = 5;

#[derive(Default)]
struct Log {
    /// Event ids whose handler ran, in the first processor.
    ran: HashSet<String>,
    stuck: bool,
}

/// Appends the event id to its tenant's `seen` list: a state write that shows a repeat or a
/// gap. The first processor's handler hangs on one event while `hang` is set.
fn handler(
    log: Arc<Mutex<Log>>,
    hang: Arc<AtomicBool>,
) -> impl Fn(Context) -> futures::future::BoxFuture<'static, Result<(), HandlerError>> + Send + Sync
{
    move |ctx: Context| {
        let (log, hang) = (log.clone(), hang.clone());
        Box::pin(async move {
            let seq = ctx.event().json()["seq"].as_u64().unwrap_or_default();
            if hang.load(Ordering::SeqCst)
                && ctx.event().client_key() == STUCK_TENANT
                && seq == STUCK_SEQ
            {
                log.lock().expect("log").stuck = true;
                futures::future::pending::<()>().await;
            }
            let mut seen: Vec<String> = ctx.state().get("seen").await?.unwrap_or_default();
            seen.push(ctx.event().id().to_string());
            ctx.state().set("seen", &seen)?;
            if hang.load(Ordering::SeqCst) {
                log.lock()
                    .expect("log")
                    .ran
                    .insert(ctx.event().id().to_string());
            }
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_mid_batch_every_event_written_once_none_skipped() {
    let harness = Harness::start(1).await;
    let mut events = Vec::new();
    for seq in 0..PER_TENANT as u64 {
        for tenant in 0..TENANTS {
            events.push(webhook(
                &format!("tenant-{tenant}"),
                "page_updated",
                json!({"seq": seq, "page": {"id": seq}}),
            ));
        }
    }
    harness.publish(&events).await;
    let pool = harness.pool();

    let log = Arc::new(Mutex::new(Log::default()));
    let hang = Arc::new(AtomicBool::new(true));
    // A killed member does not leave the group: a short session lets the next one in soon.
    let config = harness.config(&[
        ("PROCESSOR_GROUP_ID", "mid-batch"),
        (
            "KAFKA_CLIENT_PROPERTIES",
            "session.timeout.ms=6000,heartbeat.interval.ms=500",
        ),
    ]);
    let first = harness.spawn(Processor::builder(config.clone()).on_named(
        HANDLER,
        "page_*",
        handler(log.clone(), hang.clone()),
    ));
    // The stuck event's batch neighbours finish; the stuck one holds the batch's commit.
    wait_for("the stuck event", Duration::from_secs(60), || {
        let stuck = log.lock().expect("log").stuck;
        async move { stuck }
    })
    .await;
    let mut ran = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = log.lock().expect("log").ran.len();
        if now == ran {
            break;
        }
        ran = now;
    }
    let recorded_at_kill = handled_count(&pool, HANDLER).await;
    first.kill().await;
    let ran_in_first = log.lock().expect("log").ran.len() as i64;
    assert!(
        ran_in_first > recorded_at_kill,
        "killed after handlers ran and before their batch committed \
         ({ran_in_first} ran, {recorded_at_kill} recorded)"
    );
    assert_eq!(
        handled_count(&pool, HANDLER).await,
        recorded_at_kill,
        "nothing committed after the kill"
    );

    hang.store(false, Ordering::SeqCst);
    let second = harness.spawn(Processor::builder(config).on_named(
        HANDLER,
        "page_*",
        handler(log.clone(), hang.clone()),
    ));
    let total = events.len() as i64;
    wait_for("every event recorded", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { handled_count(&pool, HANDLER).await == total }
    })
    .await;
    second.stop().await.expect("clean stop");

    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for event in &events {
        expected
            .entry(event.client_key.clone())
            .or_default()
            .push(event.id.clone());
    }
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT client_key, value::text FROM tenant_state WHERE key = 'seen' ORDER BY client_key",
    )
    .fetch_all(&pool)
    .await
    .expect("tenant state");
    assert_eq!(rows.len(), TENANTS);
    for (tenant, value) in rows {
        let seen: Vec<String> = serde_json::from_str(&value).expect("a list of ids");
        assert_eq!(
            seen, expected[&tenant],
            "{tenant}: every event once, in order, none skipped"
        );
    }
}
