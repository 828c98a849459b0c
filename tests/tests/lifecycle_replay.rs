//! Finding 8 of the edge hardening, end to end: the ingest applies each lifecycle callback
//! as it arrives, and a processor that lags behind applies the same events again much
//! later, possibly in another order when lifecycle events are routed to a topic of their
//! own. However far behind it is, the reinstalled tenant's webhooks are never refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tributary_common::store::{TenantStatus, TenantStore};
use tributary_devkit::harness::{Ingest, Service, Tenant, World};
use tributary_devkit::test_keyring;
use tributary_processor::builtin::TENANT_STATE;
use tributary_tests::world::{self, EVENTS_TOPIC, start_processor};

/// Where the split run routes `uninstalled`: the other lifecycle events stay on the events
/// topic, so an old uninstall can be consumed after the reinstall that followed it.
const UNINSTALLS_TOPIC: &str = "tributary.uninstalls";
/// Uninstall, reinstall and enable, this many times after the first install and enable.
const CYCLES: usize = 3;

/// How many lifecycle events the built-in tenant-state handler has handled.
async fn lifecycle_handled(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM handled_events WHERE handler = $1")
        .bind(TENANT_STATE)
        .fetch_one(pool)
        .await
        .expect("handled events")
}

async fn wait_lifecycle_handled(pool: &sqlx::PgPool, count: i64, what: &str) {
    let until = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let handled = lifecycle_handled(pool).await;
        if handled >= count {
            assert_eq!(
                handled, count,
                "{what}: no lifecycle event is handled twice"
            );
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "{what}: {handled} of {count} lifecycle events handled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Installs and enables `tenant` through the ingest, then uninstalls, reinstalls and
/// enables it [`CYCLES`] times: the ingest applies and publishes each callback.
async fn tell_the_story(ingest: &Ingest, tenant: &Tenant) {
    assert_eq!(ingest.install(tenant).await.status(), 204);
    assert_eq!(ingest.notify(tenant, "enabled").await.status(), 204);
    for _ in 0..CYCLES {
        assert_eq!(ingest.uninstall(tenant).await.status(), 204);
        let answer = ingest.install(tenant).await;
        assert_eq!(answer.status(), 204, "reinstall: {}", answer.text());
        assert_eq!(ingest.notify(tenant, "enabled").await.status(), 204);
    }
}

/// Sends the tenant's webhooks one after the other until `stop`; every answer's status.
fn keep_sending(
    ingest: Arc<Ingest>,
    tenant: Tenant,
    first: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(u64, u16, String)>> {
    tokio::spawn(async move {
        let mut answers = Vec::new();
        let mut sequence = first;
        while !stop.load(Ordering::Relaxed) {
            let answer = ingest
                .webhook(&tenant, "page_updated", &tenant.page_event(sequence))
                .await;
            answers.push((sequence, answer.status().as_u16(), answer.code()));
            sequence += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        answers
    })
}

fn refused(answers: &[(u64, u16, String)]) -> Vec<&(u64, u16, String)> {
    answers
        .iter()
        .filter(|(_, status, _)| *status != 204)
        .collect()
}

/// Stops the sender once the ingest's cache has expired past the replay (so it has read
/// the replayed status); every answer, none of them a refusal.
async fn none_refused_once_the_cache_expired(
    sending: tokio::task::JoinHandle<Vec<(u64, u16, String)>>,
    stop: Arc<AtomicBool>,
) -> Vec<(u64, u16, String)> {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let answers = sending.await.expect("sender");
    assert!(answers.len() >= 10, "{} webhooks sent", answers.len());
    assert!(
        refused(&answers).is_empty(),
        "webhooks refused during the replay: {:?}",
        refused(&answers)
    );
    answers
}

fn stop_cleanly(processor: &mut Service) {
    let status = processor.terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "{}",
        processor.log_tail(30)
    );
}

/// The ingest with a one-second secret cache: it reads the tenant's status from the store
/// again all through the replay, so a replay that set it back would be seen.
async fn short_memory_ingest(world: &World, routes: Option<&str>) -> Arc<Ingest> {
    let mut settings = vec![("TRIBUTARY_INGEST_SECRET_CACHE_TTL_SECONDS", "1")];
    if let Some(routes) = routes {
        settings.push(("TRIBUTARY_TOPIC_ROUTES", routes));
    }
    Arc::new(world.ingest(&settings).await)
}

async fn site_tenant(world: &World, name: &str) -> Tenant {
    let tenant = Tenant::on_site(name, &world.confluence.base_url());
    world
        .confluence
        .register(&tenant.client_key, &tenant.secret);
    world
        .confluence
        .add_page(&tenant.client_key, &tenant.page_id, "9001", "Pipeline");
    tenant
}

/// After the replay, once the ingest's cache has expired: the tenant is still accepted.
async fn accepted_after_the_replay(world: &World, ingest: &Ingest, tenant: &Tenant) {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for sequence in 10_000..10_005 {
        let answer = ingest
            .webhook(tenant, "page_updated", &tenant.page_event(sequence))
            .await;
        assert_eq!(
            answer.status(),
            204,
            "after the replay: {}\n{}",
            answer.text(),
            ingest.log_tail(20)
        );
    }
    let store = TenantStore::new(world.pool().await, test_keyring());
    let status = store
        .get(&tenant.client_key)
        .await
        .expect("read")
        .map(|t| t.status);
    assert_eq!(status, Some(TenantStatus::Enabled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_processor_replaying_uninstall_reinstall_enable_never_gets_the_tenant_refused() {
    let world = world::start(2).await;
    let ingest = short_memory_ingest(&world, None).await;
    let tenant = site_tenant(&world, "phoenix").await;
    tell_the_story(&ingest, &tenant).await;
    let story = 2 + 3 * CYCLES as i64;

    // The processor starts only now, from the beginning of the topic, while the tenant
    // keeps sending.
    let stop = Arc::new(AtomicBool::new(false));
    let sending = keep_sending(ingest.clone(), tenant.clone(), 0, stop.clone());
    let mut processor = start_processor(&world, &[]);
    let pool = world.pool().await;
    wait_lifecycle_handled(&pool, story, "the replay").await;
    let answers = none_refused_once_the_cache_expired(sending, stop).await;
    accepted_after_the_replay(&world, &ingest, &tenant).await;
    println!(
        "lifecycle replay on one topic: {story} lifecycle events replayed, {} webhooks during \
         the replay, all accepted",
        answers.len()
    );
    stop_cleanly(&mut processor);
    let published = world.records(EVENTS_TOPIC).await.len();
    assert!(published >= story as usize + answers.len());
    Arc::into_inner(ingest)
        .expect("the sender is done")
        .stop()
        .await
        .expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_uninstalls_consumed_from_their_own_topic_after_the_reinstall_never_get_the_tenant_refused()
 {
    let world = world::start(2).await;
    world.kafka.create_topic(UNINSTALLS_TOPIC, 1);
    let ingest =
        short_memory_ingest(&world, Some(&format!("uninstalled={UNINSTALLS_TOPIC}"))).await;
    let tenant = site_tenant(&world, "lazarus").await;
    tell_the_story(&ingest, &tenant).await;
    assert_eq!(world.records(UNINSTALLS_TOPIC).await.len(), CYCLES);
    let without_uninstalls = 2 + 2 * CYCLES as i64;

    let stop = Arc::new(AtomicBool::new(false));
    let sending = keep_sending(ingest.clone(), tenant.clone(), 0, stop.clone());
    // First a processor that reads the events topic only: the installs and enables,
    // while the uninstalls' topic lags behind.
    let mut processor = start_processor(&world, &[("TRIBUTARY_PROCESSOR_TOPICS", EVENTS_TOPIC)]);
    let pool = world.pool().await;
    wait_lifecycle_handled(&pool, without_uninstalls, "the reinstalls").await;
    stop_cleanly(&mut processor);
    // Then one that reads both: every old uninstall arrives after the reinstall that
    // followed it.
    let both = format!("{EVENTS_TOPIC},{UNINSTALLS_TOPIC}");
    let mut processor = start_processor(&world, &[("TRIBUTARY_PROCESSOR_TOPICS", &both)]);
    wait_lifecycle_handled(
        &pool,
        without_uninstalls + CYCLES as i64,
        "the old uninstalls",
    )
    .await;
    let answers = none_refused_once_the_cache_expired(sending, stop).await;
    accepted_after_the_replay(&world, &ingest, &tenant).await;
    println!(
        "lifecycle replay over two topics: {} uninstalls consumed after their reinstalls, {} \
         webhooks during the replay, all accepted",
        CYCLES,
        answers.len()
    );
    stop_cleanly(&mut processor);
    Arc::into_inner(ingest)
        .expect("the sender is done")
        .stop()
        .await
        .expect("clean stop");
}
