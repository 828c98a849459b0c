//! A Forge event through the processor: one handler subscribed by its Connect name reads
//! it with the typed accessors and calls the site back through the Forge API gateway with
//! the installation's app system token.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tributary_common::shutdown::Shutdown;
use tributary_devkit::confluence::{Caller, Verdict};
use tributary_processor::{Context, EventSource, HandlerError, Processor};

use crate::support::{Harness, forge_site_with_a_page_event, handled_count, wait_for};

const CLOUD_ID: &str = "c10d0000-0000-4000-8000-0000000000e2";
const SYSTEM_TOKEN: &str = "system-token-of-the-installation";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forge_page_event_reaches_a_page_created_handler_that_calls_back_with_the_bearer() {
    let harness = Harness::start(1).await;
    let stop = Shutdown::new();
    let (confluence, tenant_key) =
        forge_site_with_a_page_event(&harness, &stop, CLOUD_ID, SYSTEM_TOKEN).await;

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
