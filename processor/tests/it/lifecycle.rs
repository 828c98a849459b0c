//! Lifecycle events update tenant status in order, idempotently, and `disabled` after
//! `uninstalled` leaves the tenant uninstalled.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tributary_common::connect::{LifecycleEventType, LifecyclePayload};
use tributary_common::envelope::{Envelope, EventKind};
use tributary_common::store::{TenantStatus, TenantStore};
use tributary_devkit::test_keyring;
use tributary_processor::builtin::TENANT_STATE;
use tributary_processor::{Context, Processor};

use crate::support::{Harness, TOPIC, handled_count, wait_for, webhook};

fn base_url(tenant: &str) -> String {
    format!("https://{tenant}.atlassian.net/wiki")
}

fn lifecycle(tenant: &str, event: LifecycleEventType) -> Envelope {
    // As the ingest publishes it: the body without its shared secret.
    let body = json!({
        "key": "com.example.tributary", "clientKey": tenant,
        "baseUrl": base_url(tenant), "eventType": event.as_str(),
    });
    Envelope::new(
        EventKind::Lifecycle(event),
        tenant,
        &base_url(tenant),
        Bytes::from(body.to_string()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_events_in_either_order_end_in_the_right_status() {
    use LifecycleEventType::{Disabled, Enabled, Installed, Uninstalled};
    let harness = Harness::start(2).await;
    let tenants = TenantStore::new(harness.pool(), test_keyring());
    for tenant in ["a", "b", "c"] {
        let install = LifecyclePayload::parse(
            json!({
                "key": "com.example.tributary", "clientKey": tenant, "sharedSecret": "s3cret",
                "baseUrl": base_url(tenant), "eventType": "installed",
            })
            .to_string()
            .as_bytes(),
        )
        .expect("install body");
        tenants
            .record_install(&install, "ingest-install")
            .await
            .expect("installed");
    }
    let repeated = lifecycle("c", Enabled);
    let events = vec![
        lifecycle("a", Enabled),
        lifecycle("b", Enabled),
        lifecycle("c", Installed),
        lifecycle("a", Disabled),
        lifecycle("b", Uninstalled),
        repeated.clone(),
        lifecycle("a", Uninstalled),
        lifecycle("b", Disabled),
        repeated,
        lifecycle("unknown", Enabled),
        webhook("c", "page_viewed", json!({"page": {"id": 1}})),
    ];
    harness.publish(&events).await;

    let statuses = Arc::new(Mutex::new(Vec::new()));
    let seen = statuses.clone();
    let on_lifecycle = move |ctx: Context| {
        let seen = seen.clone();
        async move {
            let status = ctx.tenant().map(|t| t.status);
            seen.lock().expect("statuses").push((
                ctx.event().client_key().to_string(),
                ctx.event().name().to_string(),
                status,
            ));
            Ok(())
        }
    };
    let sentinel = |_ctx: Context| async { Ok(()) };
    let config = harness.config(&[]);
    let running = harness.spawn(
        Processor::builder(config)
            .on_lifecycle(on_lifecycle)
            .on_named("sentinel", "page_viewed", sentinel),
    );
    let pool = harness.pool();
    wait_for(
        "every lifecycle event applied",
        Duration::from_secs(60),
        || {
            let pool = pool.clone();
            async move {
                handled_count(&pool, TENANT_STATE).await == 9
                    && handled_count(&pool, "sentinel").await == 1
            }
        },
    )
    .await;
    running.stop().await.expect("clean stop");

    let status = |tenant: &'static str| {
        let tenants = tenants.clone();
        async move { tenants.get(tenant).await.expect("read").map(|t| t.status) }
    };
    assert_eq!(
        status("a").await,
        Some(TenantStatus::Uninstalled),
        "disabled, then uninstalled"
    );
    assert_eq!(
        status("b").await,
        Some(TenantStatus::Uninstalled),
        "uninstalled, then disabled"
    );
    assert_eq!(status("c").await, Some(TenantStatus::Enabled));
    assert_eq!(status("unknown").await, None);
    let history: Vec<String> = tenants
        .lifecycle_history("c")
        .await
        .expect("history")
        .into_iter()
        .map(|r| r.event_type)
        .collect();
    assert_eq!(
        history,
        ["installed", "installed", "enabled"],
        "the repeated event applied once"
    );
    let statuses = statuses.lock().expect("statuses");
    assert!(
        statuses.contains(&("c".into(), "enabled".into(), Some(TenantStatus::Enabled))),
        "app lifecycle handlers run after the tenant state is applied: {statuses:?}"
    );
    assert_eq!(statuses.len(), 9);
}

/// What the ingest did when the callbacks arrived: each applied at once, stamped with its
/// event's time and id.
async fn apply_as_the_ingest(tenants: &TenantStore, tenant: &str, events: &[Envelope]) {
    use tributary_common::store::{InstallMode, LifecycleStamp};
    for envelope in events {
        let stamp = LifecycleStamp::new(envelope.time, &envelope.id);
        let Some(kind) = envelope.kind_lifecycle() else {
            continue;
        };
        if kind == LifecycleEventType::Installed {
            let install = LifecyclePayload::parse(
                json!({
                    "key": "com.example.tributary", "clientKey": tenant, "sharedSecret": "s3cret",
                    "baseUrl": base_url(tenant), "eventType": "installed",
                })
                .to_string()
                .as_bytes(),
            )
            .expect("install body");
            tenants
                .record_install_at(&install, &stamp, InstallMode::Upsert)
                .await
                .expect("installed");
        } else {
            tenants
                .apply_lifecycle_at(tenant, kind, &stamp)
                .await
                .expect("applied");
        }
    }
}

trait LifecycleKind {
    fn kind_lifecycle(&self) -> Option<LifecycleEventType>;
}

impl LifecycleKind for Envelope {
    fn kind_lifecycle(&self) -> Option<LifecycleEventType> {
        match self.kind {
            EventKind::Lifecycle(kind) => Some(kind),
            EventKind::Webhook(_) | EventKind::Forge(_) => None,
        }
    }
}

/// The statuses the tenant store recorded for `tenant` after its first `skip` callbacks.
async fn statuses_after(tenants: &TenantStore, tenant: &str, skip: usize) -> Vec<String> {
    tenants
        .lifecycle_history(tenant)
        .await
        .expect("history")
        .into_iter()
        .skip(skip)
        .map(|r| format!("{}->{}", r.event_type, r.status_after.unwrap_or_default()))
        .collect()
}

fn reinstall_story(tenant: &str) -> Vec<Envelope> {
    use LifecycleEventType::{Enabled, Installed, Uninstalled};
    [Installed, Enabled, Uninstalled, Installed, Enabled]
        .into_iter()
        .map(|kind| lifecycle(tenant, kind))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_processor_replaying_uninstall_and_reinstall_never_moves_the_tenant_back() {
    let harness = Harness::start(1).await;
    let tenants = TenantStore::new(harness.pool(), test_keyring());
    let story = reinstall_story("phoenix");
    apply_as_the_ingest(&tenants, "phoenix", &story).await;
    let status = || async {
        tenants
            .get("phoenix")
            .await
            .expect("read")
            .map(|t| t.status)
    };
    assert_eq!(status().await, Some(TenantStatus::Enabled));

    // The processor reaches the whole story only now, long after the ingest applied it.
    harness.publish(&story).await;
    let running = harness.spawn(Processor::builder(harness.config(&[])));
    let pool = harness.pool();
    wait_for("the replay applied", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { handled_count(&pool, TENANT_STATE).await == 5 }
    })
    .await;
    running.stop().await.expect("clean stop");

    assert_eq!(status().await, Some(TenantStatus::Enabled));
    let replayed = statuses_after(&tenants, "phoenix", story.len()).await;
    assert_eq!(replayed.len(), 5, "{replayed:?}");
    assert!(
        replayed.iter().all(|s| s.ends_with("->enabled")),
        "the replay never set the tenant back: {replayed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_old_uninstall_consumed_from_another_topic_after_the_reinstall_changes_nothing() {
    const LIFECYCLE: &str = "lifecycle";
    let harness = Harness::start(1).await;
    harness.kafka.create_topic(LIFECYCLE, 1);
    let tenants = TenantStore::new(harness.pool(), test_keyring());
    let story = reinstall_story("lazarus");
    apply_as_the_ingest(&tenants, "lazarus", &story).await;

    // Everything but the uninstall arrives first (its topic lags behind).
    let (old_uninstall, rest): (Vec<Envelope>, Vec<Envelope>) = story
        .iter()
        .cloned()
        .partition(|e| e.kind == EventKind::Lifecycle(LifecycleEventType::Uninstalled));
    harness.publish(&rest).await;
    let config = harness.config(&[("PROCESSOR_TOPICS", &format!("{TOPIC},{LIFECYCLE}"))]);
    let running = harness.spawn(Processor::builder(config));
    let pool = harness.pool();
    wait_for("the reinstall applied", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { handled_count(&pool, TENANT_STATE).await == 4 }
    })
    .await;
    harness.publish_to(LIFECYCLE, &old_uninstall).await;
    wait_for("the old uninstall applied", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { handled_count(&pool, TENANT_STATE).await == 5 }
    })
    .await;
    running.stop().await.expect("clean stop");

    let status = tenants
        .get("lazarus")
        .await
        .expect("read")
        .map(|t| t.status);
    assert_eq!(
        status,
        Some(TenantStatus::Enabled),
        "not uninstalled for good"
    );
    let replayed = statuses_after(&tenants, "lazarus", story.len()).await;
    assert!(
        replayed.iter().all(|s| s.ends_with("->enabled")),
        "{replayed:?}"
    );
}
