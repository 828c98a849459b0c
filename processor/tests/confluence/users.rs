//! Acting as a user: the JWT bearer grant, one token per user, one grant in flight per key.

use std::time::Duration;

use serde_json::Value;
use tributary_common::connect::SharedSecret;
use tributary_processor::confluence::{ConfluenceClients, ConfluenceError};

use tributary_devkit::confluence::Caller;

use crate::{Harness, SECRET, config, tenant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_calls_as_one_user_make_one_token_request() {
    // The grant is held long enough for every caller to arrive while it is in flight.
    let harness = Harness::start(&[]).await;
    harness.auth.set_delay(Duration::from_millis(300));
    let alice = harness.client.as_user("557058:alice");
    let calls = (0..20).map(|i| {
        let alice = alice.clone();
        tokio::spawn(async move {
            alice
                .get_json::<Value>("/api/v2/pages", &[("limit", &i.to_string())])
                .await
        })
    });
    for call in futures::future::join_all(calls).await {
        call.expect("task").expect("call as the user succeeds");
    }
    assert_eq!(harness.auth.requests(), 1, "one grant for twenty calls");
    assert_eq!(harness.auth.grants(), vec![Ok("557058:alice".to_string())]);
    let received = harness.confluence.calls();
    assert_eq!(received.len(), 20);
    assert!(
        received
            .iter()
            .all(|r| matches!(&r.caller, Caller::User(t) if t.ends_with("557058:alice")))
    );
    harness.assert_all_verified();

    alice
        .get_json::<Value>("/api/v2/pages", &[])
        .await
        .expect("cached token still good");
    assert_eq!(harness.auth.requests(), 1, "the cached token is reused");
}

#[tokio::test]
async fn each_user_and_scope_set_gets_its_own_token_and_the_app_needs_none() {
    let harness = Harness::start(&[]).await;
    let bob = harness.client.as_user("557058:bob");
    let carol = harness.client.as_user("557058:carol");
    let carol_read = harness
        .client
        .as_user_with_scopes("557058:carol", &["read"]);
    for client in [&bob, &carol, &carol_read, &bob] {
        client
            .get_json::<Value>("/rest/api/user/current", &[])
            .await
            .expect("call as user");
    }
    harness
        .client
        .get_json::<Value>("/rest/api/space", &[])
        .await
        .expect("call as the app");
    assert_eq!(harness.auth.requests(), 3);
    assert!(harness.auth.grants().iter().all(Result::is_ok));
    assert_eq!(bob.acting_user(), Some("557058:bob"));
    assert_eq!(bob.as_app().acting_user(), None);
    let received = harness.confluence.calls();
    assert_eq!(received.last().map(|r| r.caller.clone()), Some(Caller::App));
    harness.assert_all_verified();
}

#[tokio::test]
async fn a_tenant_without_an_oauth_client_id_cannot_act_as_a_user() {
    let harness = Harness::start(&[]).await;
    let clients =
        ConfluenceClients::from_config(&config(&harness.auth.url(), &[])).expect("clients");
    let mut legacy = tenant(&harness.confluence.base_url());
    legacy.oauth_client_id = None;
    let client = clients
        .for_tenant(&legacy, SharedSecret::new(SECRET))
        .expect("client");
    let error = client
        .as_user("557058:dave")
        .get_json::<Value>("/rest/api/space", &[])
        .await
        .expect_err("no oauthClientId");
    assert!(matches!(error, ConfluenceError::NoOAuthClientId));
    assert!(!error.is_transient());
    assert_eq!(harness.confluence.hits(), 0);
    assert_eq!(harness.auth.requests(), 0);
}

#[tokio::test]
async fn a_refused_grant_is_an_error_with_its_status() {
    let harness = Harness::start(&[]).await;
    let clients =
        ConfluenceClients::from_config(&config(&harness.auth.url(), &[])).expect("clients");
    let client = clients
        .for_tenant(
            &tenant(&harness.confluence.base_url()),
            SharedSecret::new("not-the-tenant-secret"),
        )
        .expect("client");
    let error = client
        .as_user("557058:erin")
        .get_json::<Value>("/rest/api/space", &[])
        .await
        .expect_err("the authorization server refuses the assertion");
    assert!(
        matches!(
            error,
            ConfluenceError::TokenGrant {
                status: Some(400),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!format!("{error:?}").contains("not-the-tenant-secret"));
    assert_eq!(harness.confluence.hits(), 0);
}
