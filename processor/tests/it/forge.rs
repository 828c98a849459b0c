//! A Forge event through the processor: one handler subscribed by its Connect name reads
//! it with the typed accessors and calls the site back through the Forge API gateway with
//! the installation's app system token.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tributary_common::envelope::{Envelope, EventKind, subject_of};
use tributary_common::forge::SystemToken;
use tributary_common::shutdown::Shutdown;
use tributary_common::store::{ForgeStore, InvocationRecord, site_tenant_key};
use tributary_devkit::confluence::{Caller, Simulator, SimulatorSettings, Verdict};
use tributary_devkit::test_keyring;
use tributary_processor::{Context, EventSource, HandlerError, Processor};

use crate::support::{Harness, handled_count, wait_for};

const CLOUD_ID: &str = "c10d0000-0000-4000-8000-0000000000e2";
const SYSTEM_TOKEN: &str = "system-token-of-the-installation";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forge_page_event_reaches_a_page_created_handler_that_calls_back_with_the_bearer() {
    let harness = Harness::start(1).await;
    let stop = Shutdown::new();
    let confluence = Simulator::start(
        SimulatorSettings::new("com.example.tributary"),
        stop.clone(),
    )
    .await
    .expect("simulated Confluence");
    let tenant_key = site_tenant_key(CLOUD_ID);
    confluence.register_forge(CLOUD_ID, SYSTEM_TOKEN, &tenant_key);
    confluence.add_page(&tenant_key, "42", "7", "Home");
    let api_base_url = format!("{}/ex/confluence/{CLOUD_ID}", confluence.forge_api_origin());
    let installations = ForgeStore::new(harness.pool(), test_keyring());
    installations
        .record_invocation(
            &InvocationRecord {
                installation_id: "ari:cloud:ecosystem::installation/e2e",
                cloud_id: Some(CLOUD_ID),
                api_base_url: &api_base_url,
                app_id: "ari:cloud:ecosystem::app/6a1b8ac2-4f5e-4a2b-9c47-2f9f8e7d6c5b",
                environment_type: Some("PRODUCTION"),
            },
            Some((&SystemToken::new(SYSTEM_TOKEN), i64::MAX / 2)),
        )
        .await
        .expect("installation recorded");

    let body = json!({
        "eventType": "avi:confluence:created:page",
        "atlassianId": "557058:forge",
        "content": {"id": "42", "type": "page", "title": "Home", "space": {"id": 7, "key": "DEV"}},
    });
    let event = Envelope::new(
        EventKind::Forge("avi:confluence:created:page".into()),
        &tenant_key,
        &api_base_url,
        Bytes::from(body.to_string()),
    )
    .with_subject(subject_of(&body));
    harness.publish(&[event]).await;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let handler = move |ctx: Context| {
        let record = record.clone();
        async move {
            let page = ctx
                .event()
                .page()
                .ok_or_else(|| HandlerError::permanent("no page"))?;
            let id = page.id.clone().unwrap_or_default();
            let fetched = ctx.confluence()?.get_content(&id, &[]).await?;
            record.lock().expect("seen").push((
                ctx.event().source(),
                fetched.title.clone().unwrap_or_default(),
                ctx.forge_installation().map(|i| i.tenant_key.clone()),
            ));
            Ok(())
        }
    };
    let config = harness.config(&[("FORGE_API_HOST_ALLOWLIST", "127.0.0.1")]);
    let running = harness.spawn(Processor::builder(config).on("page_created", handler));
    let pool = harness.pool();
    wait_for("the Forge event handled", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { handled_count(&pool, "page_created").await == 1 }
    })
    .await;
    running.stop().await.expect("clean stop");

    let seen = seen.lock().expect("seen").clone();
    assert_eq!(
        seen,
        vec![(
            EventSource::Forge,
            "Home".to_string(),
            Some(tenant_key.clone())
        )]
    );
    let calls = confluence.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].caller, Caller::Forge);
    assert_eq!(calls[0].verdict, Verdict::Accepted);
    assert!(
        calls[0].target.starts_with(&format!(
            "/ex/confluence/{CLOUD_ID}/wiki/rest/api/content/42"
        )),
        "{}",
        calls[0].target
    );
    stop.cancel();
}
