//! The per-tenant concurrency limit under load.

use std::time::Duration;

use serde_json::Value;

use crate::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_holds_under_a_hundred_concurrent_calls() {
    let harness = Harness::start(&[("TRIBUTARY_CONFLUENCE_MAX_CONCURRENCY_PER_TENANT", "4")]).await;
    // Each answer is held a little so that calls pile up behind the limit.
    harness.confluence.set_delay(Duration::from_millis(10));
    let calls = (0..100).map(|i| {
        let client = harness.client.clone();
        tokio::spawn(async move {
            client
                .get_json::<Value>(&format!("/api/v2/pages/{i}"), &[])
                .await
        })
    });
    for call in futures::future::join_all(calls).await {
        call.expect("task").expect("every call succeeds");
    }
    assert_eq!(harness.confluence.hits(), 100);
    let peak = harness.confluence.max_in_flight();
    assert!(peak <= 4, "{peak} requests were in flight at once, limit 4");
    assert!(peak >= 1);
    harness.assert_all_verified();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_one_tenant_share_its_limit() {
    let harness = Harness::start(&[("TRIBUTARY_CONFLUENCE_MAX_CONCURRENCY_PER_TENANT", "2")]).await;
    harness.confluence.set_delay(Duration::from_millis(10));
    let app = harness.client.clone();
    let user = harness.client.as_user("557058:frank");
    let calls = (0..30).map(|i| {
        let client = if i % 2 == 0 {
            app.clone()
        } else {
            user.clone()
        };
        tokio::spawn(async move { client.get_json::<Value>("/api/v2/spaces", &[]).await })
    });
    for call in futures::future::join_all(calls).await {
        call.expect("task").expect("every call succeeds");
    }
    assert!(harness.confluence.max_in_flight() <= 2);
    harness.assert_all_verified();
}
