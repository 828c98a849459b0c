//! Retries: Retry-After honoured, 503s outlasted, non-idempotent requests not repeated,
//! attempts bounded. Paused tokio time makes the waits instant while keeping their order
//! (one test runs on the real clock, and says why).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use tributary_processor::confluence::{ApiRequest, ConfluenceError};

use crate::Harness;
use tributary_devkit::confluence::Scripted;

#[tokio::test(start_paused = true)]
async fn a_429_waits_at_least_retry_after_then_succeeds() {
    let harness = Harness::start(&[]).await;
    harness.confluence.enqueue(
        Scripted::status(429)
            .header("Retry-After", "2")
            .body("slow down"),
    );
    let began = Instant::now();
    let answer: Value = harness
        .client
        .get_json("/rest/api/content/1", &[])
        .await
        .expect("succeeds after the rate limit");
    assert!(
        began.elapsed() >= Duration::from_secs(2),
        "retried after {:?}, before Retry-After",
        began.elapsed()
    );
    assert_eq!(answer["method"], "GET");
    assert_eq!(harness.confluence.hits(), 2);
    harness.assert_all_verified();
}

#[tokio::test(start_paused = true)]
async fn a_post_is_retried_after_429_because_it_was_not_processed() {
    let harness = Harness::start(&[]).await;
    harness
        .confluence
        .enqueue(Scripted::status(429).header("Retry-After", "5"));
    let began = Instant::now();
    harness
        .client
        .post_json::<_, Value>("/api/v2/footer-comments", &[], &json!({ "pageId": "1" }))
        .await
        .expect("the POST goes through on the second attempt");
    assert!(began.elapsed() >= Duration::from_secs(5));
    assert_eq!(harness.confluence.hits(), 2);
}

#[tokio::test(start_paused = true)]
async fn three_503s_then_200_succeeds() {
    // Waits of about 1, 2 and 4 s, jittered by up to 30%: the last may pass the default
    // 5 s after which a request leaves its wait to the caller (to park the event).
    let harness = Harness::start(&[("TRIBUTARY_PROCESSOR_PARK_AFTER_MS", "60000")]).await;
    for _ in 0..3 {
        harness
            .confluence
            .enqueue(Scripted::status(503).body("maintenance"));
    }
    harness
        .client
        .get_json::<Value>("/api/v2/pages/1", &[])
        .await
        .expect("the fourth attempt succeeds");
    assert_eq!(harness.confluence.hits(), 4);
    harness.assert_all_verified();
}

#[tokio::test(start_paused = true)]
async fn a_post_answered_500_is_not_retried() {
    let harness = Harness::start(&[]).await;
    harness
        .confluence
        .enqueue(Scripted::status(500).body("boom"));
    let error = harness
        .client
        .post_json::<_, Value>("/api/v2/pages", &[], &json!({ "title": "x" }))
        .await
        .expect_err("500 on a POST is final");
    assert_eq!(harness.confluence.hits(), 1);
    match &error {
        ConfluenceError::OutcomeUnknown {
            attempts, cause, ..
        } => {
            assert_eq!(cause.status(), Some(500));
            assert_eq!(*attempts, 1);
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(
        !error.is_transient(),
        "the page may exist: retrying the event would create it blindly"
    );
}

#[tokio::test(start_paused = true)]
async fn a_get_answered_500_is_retried() {
    let harness = Harness::start(&[]).await;
    harness.confluence.enqueue(Scripted::status(500));
    harness.confluence.enqueue(Scripted::status(502));
    harness
        .client
        .get_json::<Value>("/api/v2/pages/1", &[])
        .await
        .expect("idempotent GET outlasts server errors");
    assert_eq!(harness.confluence.hits(), 3);
}

// On the real clock with short waits: a paused clock jumps to the next timer whenever the
// runtime waits on a socket, and with three backoff waits in a row a jump could land on an
// attempt's request timeout under load, so an attempt never reached the simulator.
#[tokio::test]
async fn attempts_run_out_with_the_last_status_and_body_in_the_error() {
    let harness = Harness::start(&[
        ("TRIBUTARY_PROCESSOR_MAX_ATTEMPTS", "4"),
        ("TRIBUTARY_PROCESSOR_RETRY_INITIAL_MS", "20"),
        ("TRIBUTARY_PROCESSOR_PARK_AFTER_MS", "10000"),
    ])
    .await;
    for i in 0..4 {
        harness
            .confluence
            .enqueue(Scripted::status(503).body(format!("unavailable, try later ({i})")));
    }
    let began = Instant::now();
    let error = harness
        .client
        .get_json::<Value>("/rest/api/content/1", &[])
        .await
        .expect_err("four 503s exhaust the attempts");
    assert_eq!(
        harness.confluence.hits(),
        4,
        "max attempts is 4, first included"
    );
    match &error {
        ConfluenceError::Status {
            status,
            attempts,
            body,
            ..
        } => {
            assert_eq!(*status, 503);
            assert_eq!(*attempts, 4);
            assert_eq!(body, "unavailable, try later (3)");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(error.to_string().contains("503"));
    // Three waits of about 20, 40 and 80 ms, each jittered by at most 30%.
    assert!(began.elapsed() >= Duration::from_secs_f64(0.140 * 0.7));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_delay_cap_is_left_to_the_caller() {
    let harness = Harness::start(&[]).await;
    harness
        .confluence
        .enqueue(Scripted::status(429).header("Retry-After", "600"));
    let error = harness
        .client
        .get_json::<Value>("/rest/api/content/1", &[])
        .await
        .expect_err("a ten-minute wait is not done inline");
    assert_eq!(harness.confluence.hits(), 1);
    match error {
        ConfluenceError::Status {
            status: 429,
            retry_after,
            ..
        } => assert_eq!(retry_after, Some(Duration::from_secs(600))),
        other => panic!("unexpected error {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_retried_for_gets_only() {
    let harness = Harness::start(&[("TRIBUTARY_PROCESSOR_MAX_ATTEMPTS", "2")]).await;
    harness.confluence.set_delay(Duration::from_secs(120));

    let error = harness
        .client
        .send(
            ApiRequest::post("/api/v2/pages")
                .json(&json!({}))
                .expect("json"),
        )
        .await
        .expect_err("the POST times out");
    assert!(
        matches!(&error, ConfluenceError::OutcomeUnknown { attempts: 1, cause, .. }
            if matches!(**cause, ConfluenceError::Timeout { .. })),
        "{error:?}"
    );
    assert_eq!(harness.confluence.hits(), 1);

    let error = harness
        .client
        .send(ApiRequest::get("/api/v2/pages/1"))
        .await
        .expect_err("the GET times out twice");
    assert!(
        matches!(error, ConfluenceError::Timeout { attempts: 2, .. }),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert_eq!(harness.confluence.hits(), 3);
}
