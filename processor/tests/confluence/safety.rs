//! Calls go only where they belong: the tenant's own allowed host, no redirects elsewhere.

use serde_json::Value;
use tributary_common::connect::SharedSecret;
use tributary_processor::confluence::{ApiRequest, ConfluenceClients, ConfluenceError};

use tributary_common::shutdown::Shutdown;
use tributary_devkit::confluence::{Answers, Scripted};

use crate::{Harness, SECRET, config, simulator, tenant};

#[tokio::test]
async fn a_redirect_to_another_host_is_refused_before_anything_is_sent_there() {
    let harness = Harness::start(&[]).await;
    let stop = Shutdown::new();
    let elsewhere = simulator(Answers::Echo, &stop).await;
    let location = format!(
        "http://localhost:{}/wiki/rest/api/content/1",
        elsewhere.addr().port()
    );
    harness
        .confluence
        .enqueue(Scripted::status(302).header("Location", &location));
    let error = harness
        .client
        .get_json::<Value>("/rest/api/content/1", &[])
        .await
        .expect_err("the redirect is not followed");
    assert!(
        matches!(error, ConfluenceError::Redirected { status: 302, .. }),
        "{error:?}"
    );
    assert!(!error.is_transient());
    assert_eq!(harness.confluence.hits(), 1);
    assert_eq!(elsewhere.hits(), 0, "nothing reached the other host");
}

#[tokio::test]
async fn a_tenant_base_url_outside_the_allowlist_is_refused_before_anything_is_sent() {
    let harness = Harness::start(&[]).await;
    let strict = ConfluenceClients::from_config(&config(
        &harness.auth.url(),
        &[("TRIBUTARY_TENANT_HOST_ALLOWLIST", "*.atlassian.net")],
    ))
    .expect("clients");
    for base_url in [
        harness.confluence.base_url(),
        "https://acme.atlassian.net.evil.example/wiki".to_string(),
        "https://atlassian.net/wiki".to_string(),
        "ftp://acme.atlassian.net/wiki".to_string(),
        "https://user:pass@acme.atlassian.net/wiki".to_string(),
        "not a url".to_string(),
    ] {
        let refused = strict.for_tenant(&tenant(&base_url), SharedSecret::new(SECRET));
        assert!(
            matches!(refused, Err(ConfluenceError::HostNotAllowed(_))),
            "{base_url} should be refused"
        );
    }
    assert!(
        strict
            .for_tenant(
                &tenant("https://acme.atlassian.net/wiki"),
                SharedSecret::new(SECRET)
            )
            .is_ok()
    );
    assert_eq!(harness.confluence.hits(), 0);
}

#[tokio::test]
async fn a_path_cannot_point_the_request_at_another_host() {
    let harness = Harness::start(&[]).await;
    let stop = Shutdown::new();
    let elsewhere = simulator(Answers::Echo, &stop).await;
    for path in [
        format!(
            "//127.0.0.1:{}/wiki/rest/api/space",
            elsewhere.addr().port()
        ),
        format!(
            "http://127.0.0.1:{}/wiki/rest/api/space",
            elsewhere.addr().port()
        ),
        "/rest/../../../other".to_string(),
        format!("@127.0.0.1:{}/x", elsewhere.addr().port()),
    ] {
        let error = harness
            .client
            .send(ApiRequest::get(path.clone()))
            .await
            .expect_err("refused");
        assert!(
            matches!(error, ConfluenceError::InvalidRequest(_)),
            "{path}: {error:?}"
        );
    }
    assert_eq!(harness.confluence.hits(), 0);
    assert_eq!(elsewhere.hits(), 0);
}

#[tokio::test]
async fn secrets_never_show_in_debug_output() {
    let harness = Harness::start(&[]).await;
    let printed = format!(
        "{:?} {:?}",
        harness.client,
        harness.client.as_user("557058:x")
    );
    assert!(!printed.contains(SECRET));
    assert!(printed.contains("client-key-acme"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confluence_answer_over_the_size_cap_is_refused_and_the_next_call_is_served() {
    // The REST answer cap is 32 MiB: one byte more is refused, whatever the status says.
    const CAP: usize = 32 * 1024 * 1024;
    let harness = Harness::start(&[]).await;
    harness.confluence.enqueue(
        Scripted::status(200)
            .header("content-type", "application/json")
            .body(format!("\"{}\"", "x".repeat(CAP - 1))),
    );
    let error = harness
        .client
        .get_json::<Value>("/rest/api/content/1", &[])
        .await
        .expect_err("an answer over the cap is refused");
    assert!(
        matches!(&error, ConfluenceError::Transport { message, .. }
            if message.contains(&format!("larger than {CAP} bytes"))),
        "{error:?}"
    );
    assert_eq!(harness.confluence.hits(), 1, "not repeated by the client");
    // A refusal must not leave a half-read connection in the pool for the next call.
    let answer: Value = harness
        .client
        .get_json("/rest/api/content/1", &[])
        .await
        .expect("the next answer is read");
    assert_eq!(answer["method"], "GET");
    assert_eq!(harness.confluence.hits(), 2);
}
