//! A handler acting as the user who caused its event, through the running processor: the
//! grant goes to the configured (simulated) authorization server and the call carries that
//! user's bearer token; an event without a user, and a tenant without an oauthClientId, get
//! errors that say so.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tributary_common::connect::LifecyclePayload;
use tributary_common::envelope::{Envelope, EventKind, subject_of};
use tributary_common::shutdown::Shutdown;
use tributary_common::store::TenantStore;
use tributary_devkit::confluence::{Caller, Simulator, SimulatorSettings, Verdict};
use tributary_devkit::test_keyring;
use tributary_processor::{Context, Processor};

use crate::support::{Harness, handled_count, wait_for};

const APP_KEY: &str = "com.example.tributary";
const ALICE: &str = "557058:alice";

async fn install(tenants: &TenantStore, client_key: &str, base_url: &str, oauth: Option<&str>) {
    let mut body = json!({
        "key": APP_KEY, "clientKey": client_key, "sharedSecret": format!("{client_key}-secret"),
        "baseUrl": base_url, "eventType": "installed",
    });
    if let Some(oauth_client_id) = oauth {
        body["oauthClientId"] = json!(oauth_client_id);
    }
    let install = LifecyclePayload::parse(body.to_string().as_bytes()).expect("install body");
    tenants
        .record_install(&install, &format!("install-{client_key}"))
        .await
        .expect("installed");
}

fn page_created(client_key: &str, base_url: &str, user: Option<&str>) -> Envelope {
    let mut body = json!({ "page": { "id": 42, "idAsString": "42", "title": "Home" } });
    if let Some(user) = user {
        body["userAccountId"] = json!(user);
    }
    Envelope::new(
        EventKind::Webhook("page_created".into()),
        client_key,
        base_url,
        Bytes::from(body.to_string()),
    )
    .with_subject(subject_of(&body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_acts_as_the_event_user_or_is_told_why_it_cannot() {
    let harness = Harness::start(1).await;
    let stop = Shutdown::new();
    let confluence = Simulator::start(SimulatorSettings::new(APP_KEY), stop.clone())
        .await
        .expect("simulated Confluence");
    let base_url = confluence.base_url();
    let tenants = TenantStore::new(harness.pool(), test_keyring());
    for (client_key, oauth) in [("acme", Some("acme-oauth")), ("legacy", None)] {
        install(&tenants, client_key, &base_url, oauth).await;
        confluence.register(client_key, &format!("{client_key}-secret"));
        confluence.add_page(client_key, "42", "7", "Home");
        if let Some(oauth_client_id) = oauth {
            confluence.set_oauth_client_id(client_key, oauth_client_id);
        }
    }
    harness
        .publish(&[
            page_created("acme", &base_url, Some(ALICE)),
            page_created("acme", &base_url, None),
            page_created("legacy", &base_url, Some(ALICE)),
        ])
        .await;

    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let record = outcomes.clone();
    let handler = move |ctx: Context| {
        let record = record.clone();
        async move {
            let outcome = match ctx.confluence_as_event_user() {
                Ok(client) => client
                    .get_json::<Value>("/api/v2/pages/42", &[])
                    .await
                    .map(|page| format!("{:?} read {}", client.acting_user(), page["title"]))
                    .map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            let event = ctx.event();
            record.lock().expect("outcomes").push((
                event.client_key().to_string(),
                event.user_account_id().is_some(),
                outcome,
            ));
            Ok(())
        }
    };
    let authorization_server = confluence.authorization_server();
    let config = harness.config(&[
        ("TENANT_HOST_ALLOWLIST", "127.0.0.1"),
        ("APP_KEY", APP_KEY),
        (
            "OAUTH_AUTHORIZATION_SERVER_URL",
            &authorization_server.url(),
        ),
    ]);
    let running = harness.spawn(Processor::builder(config).on("page_created", handler));
    let pool = harness.pool();
    wait_for("the three events handled", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { handled_count(&pool, "page_created").await == 3 }
    })
    .await;
    running.stop().await.expect("clean stop");

    let outcomes = outcomes.lock().expect("outcomes").clone();
    println!("{outcomes:#?}");
    assert_eq!(outcomes.len(), 3);
    // Events of different tenants may be handled in either order.
    let outcome = |client_key: &str, with_user: bool| {
        outcomes
            .iter()
            .find(|(key, user, _)| key == client_key && *user == with_user)
            .map(|(_, _, outcome)| outcome.clone())
            .unwrap_or_else(|| panic!("no outcome for {client_key}: {outcomes:?}"))
    };
    assert_eq!(
        outcome("acme", true),
        Ok(format!("Some(\"{ALICE}\") read \"Home\"")),
        "acting as the event's user"
    );
    let no_user = outcome("acme", false).expect_err("no user to act as");
    assert!(no_user.contains("names no user"), "{no_user}");
    let no_oauth = outcome("legacy", true).expect_err("no oauthClientId");
    assert!(
        no_oauth.contains("tenant legacy") && no_oauth.contains("oauthClientId"),
        "{no_oauth}"
    );

    assert_eq!(authorization_server.grants(), vec![Ok(ALICE.to_string())]);
    let calls = confluence.calls();
    assert_eq!(calls.len(), 1, "only the user's call reached Confluence");
    assert_eq!(calls[0].caller, Caller::User(ALICE.to_string()));
    assert_eq!(calls[0].client_key.as_deref(), Some("acme"));
    assert_eq!(calls[0].verdict, Verdict::Accepted);
    stop.cancel();
}
