//! Writes that happen once, through the runtime: a handler whose comment was carried out
//! but answered too late is retried and leaves one comment; a handler whose raw write has
//! an unknown outcome dead-letters the event after one attempt instead of writing again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tributary_common::shutdown::Shutdown;
use tributary_devkit::confluence::{Fault, FaultSpan, Simulator};
use tributary_processor::confluence::ApiRequest;
use tributary_processor::dlq::header;
use tributary_processor::{Context, HandlerError, Processor};

use crate::support::{Harness, forge_site_with_a_page_event, handled_count, wait_for};

const CLOUD_ID: &str = "c10d0000-0000-4000-8000-0000000000e3";
const SYSTEM_TOKEN: &str = "system-token-of-the-writing-installation";
/// Longer than the client's request timeout in [`settings`].
const LATE: Duration = Duration::from_secs(2);

async fn site_with_an_event(harness: &Harness, stop: &Shutdown) -> (Simulator, String) {
    forge_site_with_a_page_event(harness, stop, CLOUD_ID, SYSTEM_TOKEN).await
}

fn settings() -> [(&'static str, &'static str); 5] {
    [
        ("FORGE_API_HOST_ALLOWLIST", "127.0.0.1"),
        ("CONFLUENCE_REQUEST_TIMEOUT_MS", "300"),
        ("PROCESSOR_RETRY_INITIAL_MS", "10"),
        ("PROCESSOR_RETRY_MAX_MS", "50"),
        ("PROCESSOR_MAX_ATTEMPTS", "5"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_comment_answered_too_late_and_retried_by_the_runtime_is_made_once() {
    let harness = Harness::start(1).await;
    let stop = Shutdown::new();
    let (confluence, tenant_key) = site_with_an_event(&harness, &stop).await;
    // The comment is made but its answer lost; the lookup right after it fails too, so
    // the first attempt cannot tell whether it commented.
    confluence.misbehave_on("POST", Fault::answered_late(LATE), FaultSpan::Requests(1));
    confluence.misbehave_on("GET", Fault::unavailable(None), FaultSpan::Requests(4));

    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let handler = move |ctx: Context| {
        let seen = seen.clone();
        async move {
            seen.lock().expect("attempts").push(ctx.attempt());
            ctx.confluence()?
                .add_comment("42", "<p>Welcome</p>")
                .await?;
            Ok(())
        }
    };
    let running = harness.spawn(Processor::builder(harness.config(&settings())).on_named(
        "welcome",
        "page_created",
        handler,
    ));
    let pool = harness.pool();
    wait_for("the event handled", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { handled_count(&pool, "welcome").await == 1 }
    })
    .await;
    running.stop().await.expect("clean stop");

    assert_eq!(*attempts.lock().expect("attempts"), [1, 2]);
    assert_eq!(confluence.comments(&tenant_key, "42"), ["<p>Welcome</p>"]);
    let posts = confluence
        .calls()
        .iter()
        .filter(|c| c.method == "POST")
        .count();
    assert_eq!(
        posts, 1,
        "the retry found the comment instead of posting again"
    );
    assert!(harness.dead_letters().await.is_empty());
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_raw_write_with_an_unknown_outcome_dead_letters_the_event_after_one_request() {
    let harness = Harness::start(1).await;
    let stop = Shutdown::new();
    let (confluence, _) = site_with_an_event(&harness, &stop).await;
    confluence.misbehave_on(
        "POST",
        Fault::failed_after_work(500),
        FaultSpan::Requests(1),
    );

    let handler = |ctx: Context| async move {
        let request = ApiRequest::post("/api/v2/footer-comments")
            .json(&json!({ "pageId": "42", "body": { "representation": "storage", "value": "<p>raw</p>" } }))
            .map_err(HandlerError::permanent)?;
        ctx.confluence()?.send(request).await?;
        Ok(())
    };
    let running = harness.spawn(Processor::builder(harness.config(&settings())).on_named(
        "raw",
        "page_created",
        handler,
    ));
    wait_for("the event dead-lettered", Duration::from_secs(60), || {
        let harness = &harness;
        async move { !harness.dead_letters().await.is_empty() }
    })
    .await;
    running.stop().await.expect("clean stop");

    let letters = harness.dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        crate::support::header(&letters[0], header::ATTEMPTS).as_deref(),
        Some("1"),
        "not retried"
    );
    let posts = confluence
        .calls()
        .iter()
        .filter(|c| c.method == "POST")
        .count();
    assert_eq!(posts, 1);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_comment_dead_lettered_with_an_unknown_outcome_and_replayed_is_made_once() {
    let harness = Harness::start(1).await;
    let stop = Shutdown::new();
    let (confluence, tenant_key) = site_with_an_event(&harness, &stop).await;
    // The comment is made but its answer lost, and so is the lookup after it; with a budget
    // of one attempt the event is dead-lettered, not knowing whether it commented.
    confluence.misbehave_on("POST", Fault::answered_late(LATE), FaultSpan::Requests(1));
    confluence.misbehave_on("GET", Fault::unavailable(None), FaultSpan::Requests(1));
    let replays = Arc::new(Mutex::new(Vec::new()));
    let seen = replays.clone();
    let handler = move |ctx: Context| {
        let seen = seen.clone();
        async move {
            seen.lock()
                .expect("runs")
                .push((ctx.attempt(), ctx.event().is_replay()));
            ctx.confluence()?
                .add_comment("42", "<p>Welcome</p>")
                .await?;
            Ok(())
        }
    };
    let mut settings = settings().to_vec();
    settings.retain(|(key, _)| *key != "PROCESSOR_MAX_ATTEMPTS");
    settings.push(("PROCESSOR_MAX_ATTEMPTS", "1"));
    let config = harness.config(&settings);
    let running = harness.spawn(Processor::builder(config.clone()).on_named(
        "welcome",
        "page_created",
        handler,
    ));
    wait_for("the event dead-lettered", Duration::from_secs(60), || {
        let harness = &harness;
        async move { !harness.dead_letters().await.is_empty() }
    })
    .await;
    assert_eq!(confluence.comments(&tenant_key, "42"), ["<p>Welcome</p>"]);

    // The operator replays it: its first attempt on the replay looks before writing.
    let report = tributary_processor::dlq::replay(
        &config,
        crate::support::DLQ_TOPIC,
        &tributary_processor::dlq::Selection::default(),
        false,
        Duration::from_secs(10),
    )
    .await
    .expect("replay");
    assert_eq!(report.replayed, 1);
    let pool = harness.pool();
    wait_for(
        "the replayed event handled",
        Duration::from_secs(60),
        || {
            let pool = pool.clone();
            async move { handled_count(&pool, "welcome").await == 1 }
        },
    )
    .await;
    running.stop().await.expect("clean stop");

    assert_eq!(
        *replays.lock().expect("runs"),
        [(1, false), (1, true)],
        "dead-lettered on its one attempt, then replayed"
    );
    assert_eq!(confluence.comments(&tenant_key, "42"), ["<p>Welcome</p>"]);
    let posts = confluence
        .calls()
        .iter()
        .filter(|c| c.method == "POST")
        .count();
    assert_eq!(
        posts, 1,
        "the replay found the comment instead of posting again"
    );
    stop.cancel();
}
