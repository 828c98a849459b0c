//! Outages of what the services depend on: PostgreSQL stopped mid-stream, and Confluence
//! rate-limiting and failing, within the retry budget and past it.

use std::sync::Arc;
use std::time::Duration;

use tributary_devkit::confluence::{Fault, FaultSpan};
use tributary_devkit::harness::{Delivery, Ingest, Tenant};
use tributary_tests::verdict::{comment_calls, judge};
use tributary_tests::world::{self, DLQ_TOPIC, start_processor, tenant_lists, wait_handled};

/// Sends `rounds` events for each tenant, one round every `pause`, as careful senders.
fn stream(
    ingest: Arc<Ingest>,
    tenants: Vec<Tenant>,
    rounds: u64,
    pause: Duration,
) -> tokio::task::JoinHandle<Vec<Delivery>> {
    tokio::spawn(async move {
        let mut deliveries = Vec::new();
        for sequence in 0..rounds {
            let sent =
                futures::future::join_all(tenants.iter().map(|t| ingest.deliver(t, sequence, 60)))
                    .await;
            deliveries.extend(sent);
            tokio::time::sleep(pause).await;
        }
        deliveries
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_pauses_the_pipeline_and_loses_nothing() {
    let world = world::start(2).await;
    let ingest = Arc::new(world.ingest(&[]).await);
    let mut tenants = world.install_tenants(&ingest, "outage", 6).await;
    // One tenant sends only during the outage, the others all along.
    let quiet = tenants.pop().expect("six tenants");
    let mut processor = start_processor(&world, &[]);
    // Its secret is cached when the ingest first verifies one of its webhooks.
    let before = ingest.deliver(&quiet, 0, 1).await;
    assert_eq!(before.last_status, 204);
    let sending = stream(
        ingest.clone(),
        tenants.clone(),
        80,
        Duration::from_millis(250),
    );

    tokio::time::sleep(Duration::from_secs(4)).await;
    world.stop_database().await;
    // Installs need the database: 503, try later.
    let newcomer = Tenant::on_site("newcomer", &world.confluence.base_url());
    let refused = ingest.install(&newcomer).await;
    // Webhooks of known tenants keep flowing from the secret cache.
    let during = ingest.deliver(&quiet, 1, 1).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    world.start_database().await;

    let mut deliveries = sending.await.expect("sender");
    deliveries.push(before);
    deliveries.push(during.clone());
    assert_eq!(
        (
            refused.status().as_u16(),
            refused.code().as_str(),
            refused.retry_after()
        ),
        (503, "store_unavailable", Some(world::RETRY_AFTER_SECONDS)),
        "install during the outage: {}",
        refused.text()
    );
    assert_eq!(during.last_status, 204, "a webhook during the outage");
    let acknowledged: Vec<String> = deliveries
        .iter()
        .filter_map(|d| d.event_id.clone())
        .collect();
    let pool = world.pool().await;
    let handled = wait_handled(&pool, &acknowledged, Duration::from_secs(90)).await;
    let findings = judge(
        &deliveries,
        &handled,
        &tenant_lists(&pool).await,
        &comment_calls(&world.confluence.calls()),
    );
    println!(
        "database outage: acknowledged={} handled={} lost={}",
        findings.acknowledged,
        findings.handled,
        findings.lost.len()
    );
    assert!(
        findings.lost.is_empty(),
        "lost {:?}\n{}",
        findings.lost,
        processor.log_tail(40)
    );
    assert!(
        findings.effect_errors.is_empty(),
        "{:?}",
        findings.effect_errors
    );
    assert!(
        findings.order_errors.is_empty(),
        "{:?}",
        findings.order_errors
    );
    assert!(
        processor.running(),
        "the processor paused, it did not stop:\n{}",
        processor.log_tail(40)
    );
    assert!(
        world.records(DLQ_TOPIC).await.is_empty(),
        "nothing was dead-lettered"
    );
    assert_eq!(
        ingest.install(&newcomer).await.status(),
        204,
        "installs work again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn confluence_outages_are_waited_out_within_the_budget_and_replayed_past_it() {
    let world = world::start(2).await;
    let ingest = Arc::new(world.ingest(&[]).await);
    let tenants = world.install_tenants(&ingest, "rest", 2).await;
    let mut processor = start_processor(
        &world,
        &[
            ("TRIBUTARY_PROCESSOR_MAX_ATTEMPTS", "6"),
            ("TRIBUTARY_PROCESSOR_RETRY_INITIAL_MS", "200"),
            ("TRIBUTARY_PROCESSOR_RETRY_MAX_MS", "2000"),
        ],
    );
    let pool = world.pool().await;

    // Within the budget: rate limited, then unavailable for a while.
    world
        .confluence
        .misbehave(Fault::rate_limited(1), FaultSpan::Requests(3));
    world.confluence.misbehave(
        Fault::unavailable(Some(1)),
        FaultSpan::For(Duration::from_secs(3)),
    );
    let first = stream(ingest.clone(), tenants.clone(), 10, Duration::ZERO)
        .await
        .expect("sender");
    let acknowledged: Vec<String> = first.iter().filter_map(|d| d.event_id.clone()).collect();
    assert_eq!(acknowledged.len(), 20);
    let handled = wait_handled(&pool, &acknowledged, Duration::from_secs(90)).await;
    let calls = world.confluence.calls();
    let findings = judge(
        &first,
        &handled,
        &tenant_lists(&pool).await,
        &comment_calls(&calls),
    );
    assert!(
        findings.lost.is_empty(),
        "not handled: {:?}\n{}",
        findings.lost,
        processor.log_tail(40)
    );
    assert!(findings.uncalled.is_empty(), "{:?}", findings.uncalled);
    let statuses = |status: u16| calls.iter().filter(|c| c.status == status).count();
    assert!(
        statuses(429) >= 3 && statuses(503) >= 1,
        "the outage was met"
    );
    assert!(
        world.records(DLQ_TOPIC).await.is_empty(),
        "nothing was dead-lettered within the budget"
    );

    // Past the budget: the events go to the dead-letter topic, and a replay completes them.
    world.confluence.misbehave(
        Fault::unavailable(None),
        FaultSpan::For(Duration::from_secs(3600)),
    );
    let second = stream(ingest.clone(), tenants.clone(), 3, Duration::ZERO)
        .await
        .expect("sender");
    let doomed: Vec<String> = second.iter().filter_map(|d| d.event_id.clone()).collect();
    assert_eq!(doomed.len(), 6);
    let mut dead = Vec::new();
    for _ in 0..120 {
        dead = world.records(DLQ_TOPIC).await;
        if dead.len() >= doomed.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        dead.len(),
        doomed.len(),
        "every event past the budget was dead-lettered\n{}",
        processor.log_tail(40)
    );
    world.confluence.behave();
    let replay = world.cli(&["dlq", "replay", "--all"]);
    assert!(
        replay.status.success(),
        "replay: {}{}",
        String::from_utf8_lossy(&replay.stdout),
        String::from_utf8_lossy(&replay.stderr)
    );
    let handled = wait_handled(&pool, &doomed, Duration::from_secs(90)).await;
    let missing: Vec<&String> = doomed
        .iter()
        .filter(|id| !handled.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "not completed by the replay: {missing:?}\n{}",
        processor.log_tail(40)
    );
    let per_event = comment_calls(&world.confluence.calls());
    assert!(
        doomed.iter().all(|id| per_event.contains_key(id)),
        "replayed events called Confluence"
    );
    println!(
        "confluence outage: {} events waited out the outage, {} dead-lettered past the budget and replayed",
        acknowledged.len(),
        doomed.len()
    );
    let status = processor.terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean stop: {status:?}"
    );
}
