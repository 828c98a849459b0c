//! The typed helpers against a simulated site with content, and the simulator's faults
//! met by the client's retries.

use std::time::Duration;

use serde_json::json;
use tributary_devkit::confluence::{Fault, FaultSpan};
use tributary_processor::confluence::{ApiRequest, NewPage, PageUpdate};

use crate::{CLIENT_KEY, Harness};

/// A site with quick retries and a short request timeout.
async fn site() -> Harness {
    Harness::on_site(&[
        ("TRIBUTARY_PROCESSOR_RETRY_INITIAL_MS", "10"),
        ("TRIBUTARY_PROCESSOR_RETRY_MAX_MS", "50"),
        ("TRIBUTARY_CONFLUENCE_REQUEST_TIMEOUT_MS", "500"),
    ])
    .await
}

#[tokio::test]
async fn the_typed_helpers_get_realistic_answers() {
    let harness = site().await;
    let (simulator, client) = (&harness.confluence, &harness.client);
    simulator.add_page(CLIENT_KEY, "42", "7", "Home");

    let content = client
        .get_content("42", &["body.storage"])
        .await
        .expect("content");
    assert_eq!(
        (content.id.as_str(), content.content_type.as_str()),
        ("42", "page")
    );
    let created = client
        .create_page(&NewPage {
            space_id: "7".into(),
            title: "Notes".into(),
            parent_id: Some("42".into()),
            storage_body: "<p>hi</p>".into(),
        })
        .await
        .expect("create");
    let again = client
        .create_page(&NewPage {
            space_id: "7".into(),
            title: "Notes".into(),
            parent_id: None,
            storage_body: String::new(),
        })
        .await;
    assert_eq!(again.expect_err("titles are unique").status(), Some(400));
    let update = PageUpdate {
        title: "Notes v2".into(),
        storage_body: "<p>more</p>".into(),
        version: 2,
        version_message: None,
    };
    let updated = client
        .update_page(&created.id, &update)
        .await
        .expect("update");
    assert_eq!(updated.version.map(|v| v.number), Some(2));
    let repeated = client
        .update_page(&created.id, &update)
        .await
        .expect("the same update again is the one already made");
    assert_eq!(repeated.version.map(|v| v.number), Some(2));
    let stale = client
        .update_page(
            &created.id,
            &PageUpdate {
                storage_body: "<p>other</p>".into(),
                ..update.clone()
            },
        )
        .await;
    assert_eq!(stale.expect_err("stale version").status(), Some(409));
    let page = client.get_page(&created.id).await.expect("page");
    assert_eq!(page.title.as_deref(), Some("Notes v2"));
    assert_eq!(
        page.body
            .and_then(|b| b.storage)
            .map(|s| s.value)
            .as_deref(),
        Some("<p>more</p>")
    );

    client
        .add_comment("42", "<p>first</p>")
        .await
        .expect("comment");
    client.add_label("42", "seen").await.expect("label");
    client.add_label("42", "seen").await.expect("label twice");
    assert_eq!(simulator.comments(CLIENT_KEY, "42"), vec!["<p>first</p>"]);
    assert_eq!(simulator.labels(CLIENT_KEY, "42"), vec!["seen"]);

    assert_eq!(
        client.get_content_property("42", "k").await.expect("none"),
        None
    );
    let first = client
        .set_content_property("42", "k", &json!({"n": 1}))
        .await
        .expect("set");
    let second = client
        .set_content_property("42", "k", &json!({"n": 2}))
        .await
        .expect("set");
    assert_eq!(first.version.map(|v| v.number), Some(1));
    assert_eq!(second.version.map(|v| v.number), Some(2));
    assert_eq!(
        client
            .get_content_property("42", "k")
            .await
            .expect("get")
            .map(|p| p.value),
        Some(json!({"n": 2}))
    );

    let missing = client.get_content("999", &[]).await;
    assert_eq!(missing.expect_err("unknown content").status(), Some(404));
    let unknown = client.send(ApiRequest::get("/rest/api/nothing-here")).await;
    assert_eq!(unknown.expect_err("unknown path").status(), Some(404));

    let calls = simulator.calls();
    assert!(calls.iter().all(|c| c.verdict.is_accepted()), "{calls:?}");
    assert!(
        calls
            .iter()
            .all(|c| c.client_key.as_deref() == Some(CLIENT_KEY))
    );
    assert_eq!(calls.len() as u64, simulator.hits());
}

#[tokio::test]
async fn faults_are_answered_then_it_recovers() {
    let harness = site().await;
    let (simulator, client) = (&harness.confluence, &harness.client);
    simulator.add_page(CLIENT_KEY, "42", "7", "Home");
    simulator.misbehave(Fault::rate_limited(0), FaultSpan::Requests(1));
    simulator.misbehave(Fault::unavailable(None), FaultSpan::Requests(1));
    client
        .get_content("42", &[])
        .await
        .expect("retried past the faults");
    let statuses: Vec<u16> = simulator.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, vec![429, 503, 200]);

    simulator.misbehave(Fault::Hang, FaultSpan::For(Duration::from_secs(3600)));
    let hung = client.get_content("42", &[]).await;
    assert!(
        hung.expect_err("held until the client gave up")
            .is_transient()
    );
    simulator.behave();
    client.get_content("42", &[]).await.expect("behaves again");
}
