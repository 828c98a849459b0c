//! Writes that happen once: a write whose answer was lost is not repeated blindly, and the
//! built-in write helpers find what an earlier attempt made instead of making it again.
//! The simulated site carries each write out and then answers late (past the client's
//! timeout) or with 500, as a Confluence that did the work and failed to say so.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use serde_json::{Value, json};
use tributary_common::connect::SharedSecret;
use tributary_common::shutdown::Shutdown;
use tributary_devkit::confluence::{Answers, Fault, FaultSpan, Simulator, SimulatorSettings};
use tributary_processor::confluence::{
    ApiRequest, ConfluenceClient, ConfluenceClients, ConfluenceError, NewPage, PageUpdate, WriteKey,
};

use crate::{APP_KEY, CLIENT_KEY, Harness, SECRET, config, tenant};

/// Longer than the client's request timeout below: an answer held this long is lost.
const LATE: Duration = Duration::from_secs(2);

/// A site with page 42 in space 7, quick retries and a short request timeout.
async fn site() -> Harness {
    let harness = Harness::on_site(&[
        // Four attempts per request: `lose_the_post_and_the_lookup` fails four GETs.
        ("TRIBUTARY_PROCESSOR_MAX_ATTEMPTS", "4"),
        ("TRIBUTARY_PROCESSOR_RETRY_INITIAL_MS", "10"),
        ("TRIBUTARY_PROCESSOR_RETRY_MAX_MS", "50"),
        ("TRIBUTARY_CONFLUENCE_REQUEST_TIMEOUT_MS", "300"),
    ])
    .await;
    harness.confluence.add_page(CLIENT_KEY, "42", "7", "Home");
    harness
}

/// The client as attempt `attempt` of handler `comments` on event `evt-1` gets it.
fn attempt(harness: &Harness, attempt: u32) -> ConfluenceClient {
    harness
        .client
        .clone()
        .for_event(&WriteKey::new("comments", "evt-1", attempt))
}

fn requests(harness: &Harness, method: &str) -> usize {
    harness
        .confluence
        .calls()
        .iter()
        .filter(|call| call.method == method)
        .count()
}

/// The next POST is carried out and its answer lost in `fault`; the lookups that follow
/// fail, so the first attempt ends without knowing whether it wrote.
fn lose_the_post_and_the_lookup(harness: &Harness, fault: Fault) {
    harness
        .confluence
        .misbehave_on("POST", fault, FaultSpan::Requests(1));
    harness
        .confluence
        .misbehave_on("GET", Fault::unavailable(None), FaultSpan::Requests(4));
}

#[tokio::test]
async fn a_raw_post_whose_answer_is_late_or_500_is_outcome_unknown_and_sent_once() {
    let harness = site().await;
    let comment =
        json!({ "pageId": "42", "body": { "representation": "storage", "value": "<p>x</p>" } });
    for (fault, timed_out) in [
        (Fault::answered_late(LATE), true),
        (Fault::failed_after_work(500), false),
    ] {
        let before = harness.confluence.hits();
        harness.confluence.misbehave(fault, FaultSpan::Requests(1));
        let error = harness
            .client
            .send(
                ApiRequest::post("/api/v2/footer-comments")
                    .json(&comment)
                    .expect("json"),
            )
            .await
            .expect_err("the answer was lost");
        match &error {
            ConfluenceError::OutcomeUnknown {
                method,
                path,
                attempts,
                cause,
            } => {
                assert_eq!(method, "POST");
                assert_eq!(path, "/api/v2/footer-comments");
                assert_eq!(*attempts, 1);
                if timed_out {
                    assert!(
                        matches!(**cause, ConfluenceError::Timeout { .. }),
                        "{cause:?}"
                    );
                } else {
                    assert_eq!(cause.status(), Some(500));
                }
            }
            other => panic!("expected OutcomeUnknown, got {other:?}"),
        }
        assert!(
            !error.is_transient(),
            "a handler passing it on dead-letters the event"
        );
        assert_eq!(
            harness.confluence.hits() - before,
            1,
            "the POST was not repeated"
        );
    }
    assert_eq!(
        harness.confluence.comments(CLIENT_KEY, "42").len(),
        2,
        "both POSTs were carried out, once each"
    );
    harness.assert_all_verified();
}

/// A site that reads each whole request, writes `answer` (nothing, or the start of one)
/// and closes the connection; and the count of requests it read.
async fn breaking_site(answer: &'static [u8]) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut received = Vec::new();
                let mut chunk = [0u8; 8192];
                while !whole_request(&received) {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => received.extend_from_slice(&chunk[..n]),
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(answer).await;
            });
        }
    });
    (format!("http://{addr}/wiki"), requests)
}

/// True once `received` holds a request's head and as much body as it declares.
fn whole_request(received: &[u8]) -> bool {
    let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    received.len() >= end + 4 + length
}

#[tokio::test]
async fn a_post_whose_connection_breaks_after_it_was_sent_is_outcome_unknown() {
    for answer in [
        &b""[..],
        &b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: application/json\r\n\r\n{\"id\":"[..],
    ] {
        let (base_url, requests) = breaking_site(answer).await;
        let clients = ConfluenceClients::from_config(&config("http://127.0.0.1:9/", &[]))
            .expect("clients");
        let client = clients
            .for_tenant(&tenant(&base_url), SharedSecret::new(SECRET))
            .expect("loopback tenant");
        let error = client
            .send(
                ApiRequest::post("/rest/api/content")
                    .json(&json!({ "type": "comment" }))
                    .expect("json"),
            )
            .await
            .expect_err("the connection broke");
        match &error {
            ConfluenceError::OutcomeUnknown {
                attempts, cause, ..
            } => {
                assert_eq!(*attempts, 1);
                assert!(
                    matches!(**cause, ConfluenceError::Transport { .. }),
                    "{cause:?}"
                );
            }
            other => panic!("expected OutcomeUnknown, got {other:?}"),
        }
        assert_eq!(requests.load(Ordering::SeqCst), 1, "sent once");
    }
}

#[tokio::test]
async fn a_post_whose_connection_was_refused_is_retried() {
    // A port nothing listens on yet: the first attempts are refused, nothing is sent.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let base_url = format!("http://127.0.0.1:{port}/wiki");
    let clients = ConfluenceClients::from_config(&config(
        "http://127.0.0.1:9/",
        &[
            ("TRIBUTARY_PROCESSOR_MAX_ATTEMPTS", "10"),
            ("TRIBUTARY_PROCESSOR_RETRY_INITIAL_MS", "100"),
            ("TRIBUTARY_PROCESSOR_RETRY_MAX_MS", "200"),
        ],
    ))
    .expect("clients");
    let client = clients
        .for_tenant(&tenant(&base_url), SharedSecret::new(SECRET))
        .expect("loopback tenant");
    let sending = tokio::spawn(async move {
        client
            .send(
                ApiRequest::post("/api/v2/footer-comments")
                    .json(&json!({ "pageId": "42" }))
                    .expect("json"),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    let stop = Shutdown::new();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the port is still free");
    let simulator = Simulator::serve(
        listener,
        SimulatorSettings::new(APP_KEY).answering(Answers::Echo),
        stop.clone(),
    )
    .expect("simulator");
    simulator.register(CLIENT_KEY, SECRET);
    let answer = sending
        .await
        .expect("the sending task")
        .expect("the POST went through once the site was up");
    let echoed: Value = answer.json().expect("echo");
    assert_eq!(echoed["method"], "POST");
    assert_eq!(
        simulator.hits(),
        1,
        "only the attempt that connected reached the site"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_comment_answered_late_is_found_instead_of_posted_again() {
    let harness = site().await;
    harness
        .confluence
        .misbehave_on("POST", Fault::answered_late(LATE), FaultSpan::Requests(1));
    let comment = attempt(&harness, 1)
        .add_comment("42", "<p>Welcome</p>")
        .await
        .expect("the lookup finds the comment the late POST made");
    assert_eq!(
        harness.confluence.comments(CLIENT_KEY, "42"),
        ["<p>Welcome</p>"]
    );
    assert_eq!(requests(&harness, "POST"), 1);
    assert!(!comment.id.is_empty());

    // The handler fails on a later step and is retried: its comment is the same one.
    let again = attempt(&harness, 2)
        .add_comment("42", "<p>Welcome</p>")
        .await
        .expect("found");
    assert_eq!(again.id, comment.id);
    assert_eq!(requests(&harness, "POST"), 1);
    harness.assert_all_verified();
}

#[tokio::test]
async fn a_comment_lost_late_or_to_a_500_then_retried_by_the_handler_is_made_once() {
    for fault in [Fault::answered_late(LATE), Fault::failed_after_work(500)] {
        let harness = site().await;
        lose_the_post_and_the_lookup(&harness, fault.clone());
        let error = attempt(&harness, 1)
            .add_comment("42", "<p>Welcome</p>")
            .await
            .expect_err("neither the POST nor the lookup was answered");
        assert!(
            error.is_transient(),
            "the retry looks before writing, so retrying is safe: {error:?}"
        );

        attempt(&harness, 2)
            .add_comment("42", "<p>Welcome</p>")
            .await
            .expect("the retry finds the first attempt's comment");
        assert_eq!(
            harness.confluence.comments(CLIENT_KEY, "42"),
            ["<p>Welcome</p>"],
            "{fault:?}"
        );
        assert_eq!(requests(&harness, "POST"), 1, "{fault:?}");
    }
}

#[tokio::test]
async fn two_comments_of_one_run_stay_two_on_its_retry() {
    let harness = site().await;
    let first = attempt(&harness, 1);
    first.add_comment("42", "<p>one</p>").await.expect("one");
    first.add_comment("42", "<p>two</p>").await.expect("two");
    // The retry makes both calls again, in the same order, through a client of its own.
    let retry = attempt(&harness, 2);
    retry.add_comment("42", "<p>one</p>").await.expect("one");
    retry
        .clone()
        .add_comment("42", "<p>two</p>")
        .await
        .expect("two");
    assert_eq!(
        harness.confluence.comments(CLIENT_KEY, "42"),
        ["<p>one</p>", "<p>two</p>"]
    );
    // Another event's run comments on its own.
    harness
        .client
        .clone()
        .for_event(&WriteKey::new("comments", "evt-2", 2))
        .add_comment("42", "<p>one</p>")
        .await
        .expect("another event");
    assert_eq!(harness.confluence.comments(CLIENT_KEY, "42").len(), 3);
}

#[tokio::test]
async fn outside_a_handler_a_lost_comment_is_found_or_reported_unknown() {
    let harness = site().await;
    harness
        .confluence
        .misbehave_on("POST", Fault::answered_late(LATE), FaultSpan::Requests(1));
    harness
        .client
        .add_comment("42", "<p>found</p>")
        .await
        .expect("the same call finds what it made");

    lose_the_post_and_the_lookup(&harness, Fault::failed_after_work(502));
    let error = harness
        .client
        .add_comment("42", "<p>lost</p>")
        .await
        .expect_err("the outcome stays unknown");
    assert!(
        matches!(error, ConfluenceError::OutcomeUnknown { .. }),
        "{error:?}"
    );
    assert!(!error.is_transient());
    assert_eq!(
        harness.confluence.comments(CLIENT_KEY, "42"),
        ["<p>found</p>", "<p>lost</p>"]
    );
    assert_eq!(requests(&harness, "POST"), 2);
}

fn notes() -> NewPage {
    NewPage {
        space_id: "7".into(),
        title: "Notes".into(),
        parent_id: Some("42".into()),
        storage_body: "<p>hi</p>".into(),
    }
}

#[tokio::test]
async fn a_page_created_late_or_to_a_500_then_retried_by_the_handler_is_made_once() {
    for fault in [Fault::answered_late(LATE), Fault::failed_after_work(500)] {
        let harness = site().await;
        lose_the_post_and_the_lookup(&harness, fault.clone());
        let error = attempt(&harness, 1)
            .create_page(&notes())
            .await
            .expect_err("neither the POST nor the lookup was answered");
        assert!(error.is_transient(), "{error:?}");

        let page = attempt(&harness, 2)
            .create_page(&notes())
            .await
            .expect("the retry finds the first attempt's page");
        let made = harness.confluence.pages_titled(CLIENT_KEY, "7", "Notes");
        assert_eq!(made, std::slice::from_ref(&page.id), "{fault:?}");
        assert_eq!(page.title.as_deref(), Some("Notes"));
        assert_eq!(page.space_id.as_deref(), Some("7"));
        assert_eq!(page.parent_id.as_deref(), Some("42"));
        assert_eq!(requests(&harness, "POST"), 1, "{fault:?}");
    }
}

#[tokio::test]
async fn a_page_answered_late_is_found_in_the_same_call() {
    let harness = site().await;
    harness
        .confluence
        .misbehave_on("POST", Fault::answered_late(LATE), FaultSpan::Requests(1));
    let page = attempt(&harness, 1)
        .create_page(&notes())
        .await
        .expect("found by its marker");
    assert_eq!(
        harness.confluence.pages_titled(CLIENT_KEY, "7", "Notes"),
        std::slice::from_ref(&page.id)
    );
    assert_eq!(
        page.body
            .and_then(|b| b.storage)
            .map(|s| s.value)
            .as_deref(),
        Some("<p>hi</p>")
    );
    assert_eq!(page.version.map(|v| v.number), Some(1));

    // Another run asking for the same title is refused, not handed this run's page.
    let other = harness
        .client
        .clone()
        .for_event(&WriteKey::new("pages", "evt-9", 2))
        .create_page(&notes())
        .await
        .expect_err("the title is taken");
    assert_eq!(other.status(), Some(400));
}

fn second_version() -> PageUpdate {
    PageUpdate {
        title: "Home".into(),
        storage_body: "<p>v2</p>".into(),
        version: 2,
        version_message: Some("by a handler".into()),
    }
}

#[tokio::test]
async fn an_update_whose_answer_was_lost_makes_one_version() {
    for fault in [Fault::answered_late(LATE), Fault::failed_after_work(500)] {
        let harness = site().await;
        harness
            .confluence
            .misbehave_on("PUT", fault.clone(), FaultSpan::Requests(1));
        let page = attempt(&harness, 1)
            .update_page("42", &second_version())
            .await
            .expect("the repeated PUT's 409 shows the first one succeeded");
        assert_eq!(page.version.map(|v| v.number), Some(2), "{fault:?}");
        assert_eq!(
            harness.confluence.page_version(CLIENT_KEY, "42"),
            Some((2, "Home".to_string()))
        );
        assert_eq!(
            requests(&harness, "PUT"),
            2,
            "the PUT was repeated, harmlessly"
        );

        // The handler's retry, even one that asks for the next version again, adds none.
        let mut recomputed = second_version();
        recomputed.version = 3;
        let page = attempt(&harness, 2)
            .update_page("42", &recomputed)
            .await
            .expect("already as asked");
        assert_eq!(page.version.map(|v| v.number), Some(2));
        assert_eq!(
            harness.confluence.page_version(CLIENT_KEY, "42"),
            Some((2, "Home".to_string()))
        );
        assert_eq!(requests(&harness, "PUT"), 2);
    }
}

#[tokio::test]
async fn an_update_to_a_version_someone_else_took_is_still_a_conflict() {
    let harness = site().await;
    harness
        .client
        .update_page("42", &second_version())
        .await
        .expect("first");
    let mut theirs = second_version();
    theirs.storage_body = "<p>another edit</p>".into();
    let conflict = harness
        .client
        .update_page("42", &theirs)
        .await
        .expect_err("version 2 is taken by different content");
    assert_eq!(conflict.status(), Some(409));
}

#[tokio::test]
async fn a_content_property_whose_answer_was_lost_is_set_once() {
    let harness = site().await;
    let client = attempt(&harness, 1);
    harness
        .confluence
        .misbehave_on("POST", Fault::answered_late(LATE), FaultSpan::Requests(1));
    let created = client
        .set_content_property("42", "state", &json!({ "n": 1 }))
        .await
        .expect("the repeated create's 409 shows the first one succeeded");
    assert_eq!(created.version.map(|v| v.number), Some(1));
    assert_eq!(requests(&harness, "POST"), 2);

    harness
        .confluence
        .misbehave_on("PUT", Fault::failed_after_work(500), FaultSpan::Requests(1));
    let updated = client
        .set_content_property("42", "state", &json!({ "n": 2 }))
        .await
        .expect("the repeated update's 409 shows the first one succeeded");
    assert_eq!(updated.version.map(|v| v.number), Some(2));

    let unchanged = client
        .set_content_property("42", "state", &json!({ "n": 2 }))
        .await
        .expect("already holds the value");
    assert_eq!(unchanged.version.map(|v| v.number), Some(2));
    assert_eq!(
        requests(&harness, "PUT"),
        2,
        "no new version for the same value"
    );
    assert_eq!(
        client
            .get_content_property("42", "state")
            .await
            .expect("get")
            .map(|p| p.value),
        Some(json!({ "n": 2 }))
    );
}
