//! The processor checks a tenant's base URL again on every call a handler makes: a base
//! URL that reached the store without the ingest's checks (an import, an old row) is
//! refused before anything is sent, whatever rule it breaks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tributary_common::connect::LifecyclePayload;
use tributary_common::envelope::{Envelope, EventKind, subject_of};
use tributary_common::shutdown::Shutdown;
use tributary_common::store::TenantStore;
use tributary_devkit::confluence::{Simulator, SimulatorSettings};
use tributary_devkit::test_keyring;
use tributary_processor::{Context, Processor};

use crate::support::{Harness, handled_count, wait_for};

const APP_KEY: &str = "com.example.tributary";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn base_urls_with_a_port_http_userinfo_or_a_backslash_are_refused_on_the_call() {
    let harness = Harness::start(1).await;
    let stop = Shutdown::new();
    let confluence = Simulator::start(SimulatorSettings::new(APP_KEY), stop.clone())
        .await
        .expect("simulated Confluence");
    let port = confluence.addr().port();
    // 127.0.0.1 is a development host (http, any port); localhost is allowed but is not
    // one, so https and the default port are required of it. Every URL below leads to
    // the simulator if it were followed.
    let tenants_and_urls = [
        ("allowed", format!("http://127.0.0.1:{port}/wiki")),
        ("port", format!("https://localhost:{port}/wiki")),
        ("plain-http", format!("http://localhost:{port}/wiki")),
        ("userinfo", format!("http://evil@127.0.0.1:{port}/wiki")),
        (
            "backslash",
            format!("http://127.0.0.1:{port}\\@evil.example/wiki"),
        ),
    ];
    let tenants = TenantStore::new(harness.pool(), test_keyring());
    let mut events = Vec::new();
    for (client_key, base_url) in &tenants_and_urls {
        // Straight into the store, as the ingest would never have let these in.
        let body = json!({
            "key": APP_KEY, "clientKey": client_key,
            "sharedSecret": format!("{client_key}-secret"),
            "baseUrl": base_url, "eventType": "installed",
        });
        let install = LifecyclePayload::parse(body.to_string().as_bytes()).expect("install body");
        tenants
            .record_install(&install, &format!("install-{client_key}"))
            .await
            .expect("installed");
        confluence.register(client_key, &format!("{client_key}-secret"));
        confluence.add_page(client_key, "42", "7", "Home");
        let page = json!({ "page": { "id": 42, "idAsString": "42", "title": "Home" } });
        events.push(
            Envelope::new(
                EventKind::Webhook("page_created".into()),
                client_key,
                base_url,
                Bytes::from(page.to_string()),
            )
            .with_subject(subject_of(&page)),
        );
    }
    harness.publish(&events).await;

    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let record = outcomes.clone();
    let handler = move |ctx: Context| {
        let record = record.clone();
        async move {
            let outcome = match ctx.confluence() {
                Ok(client) => client
                    .get_json::<Value>("/api/v2/pages/42", &[])
                    .await
                    .map(|page| page["title"].to_string())
                    .map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            record
                .lock()
                .expect("outcomes")
                .push((ctx.event().client_key().to_string(), outcome));
            Ok(())
        }
    };
    let config = harness.config(&[
        ("TENANT_HOST_ALLOWLIST", "127.0.0.1,localhost"),
        ("TENANT_DEVELOPMENT_HOSTS", "127.0.0.1"),
        ("APP_KEY", APP_KEY),
    ]);
    let running = harness.spawn(Processor::builder(config).on("page_created", handler));
    let pool = harness.pool();
    wait_for("every event handled", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { handled_count(&pool, "page_created").await == 5 }
    })
    .await;
    running.stop().await.expect("clean stop");

    let outcomes = outcomes.lock().expect("outcomes").clone();
    println!("{outcomes:#?}");
    assert_eq!(outcomes.len(), tenants_and_urls.len());
    for (client_key, outcome) in &outcomes {
        match client_key.as_str() {
            "allowed" => assert_eq!(outcome, &Ok("\"Home\"".to_string())),
            refused => {
                let error = outcome.clone().expect_err(refused);
                assert!(error.contains("base URL is refused"), "{refused}: {error}");
            }
        }
    }
    let calls = confluence.calls();
    assert_eq!(calls.len(), 1, "only the allowed tenant's call was sent");
    assert_eq!(calls[0].client_key.as_deref(), Some("allowed"));
    stop.cancel();
}
