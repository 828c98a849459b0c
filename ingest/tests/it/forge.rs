//! Forge Remote deliveries: verified invocation tokens, CloudEvents records, refusals,
//! retries keeping their event id, and one tenant with a Connect and a Forge identity.

use rdkafka::Message;
use rdkafka::message::Headers;
use serde_json::{Value, json};
use tributary_common::store::{
    ForgeStatus, ForgeStore, TenantStatus, TenantStore, site_tenant_key,
};
use tributary_devkit::forge::{ForgeInstallation, JwksServer, TEST_APP_ID, retried};
use tributary_devkit::{INSTALL_KEY_1, INSTALL_KEY_2, INSTALL_PUB_2, InstallKey, test_keyring};

use crate::harness::*;

const FIT_KID: &str = "forge/invocation-token/test-1";

struct Forge {
    jwks: JwksServer,
    site: ForgeInstallation,
    settings: Vec<(String, String)>,
}

impl Forge {
    async fn start() -> Forge {
        let key = InstallKey::test(FIT_KID);
        let jwks = JwksServer::start(&[&key]).await;
        let site = ForgeInstallation::new(TEST_APP_ID, "https://api.atlassian.com", key);
        let settings = vec![
            (
                "TRIBUTARY_FORGE_APP_ID".to_string(),
                TEST_APP_ID.to_string(),
            ),
            ("TRIBUTARY_FORGE_JWKS_URL".to_string(), jwks.url()),
        ];
        Forge {
            jwks,
            site,
            settings,
        }
    }

    fn settings(&self) -> Vec<(&str, &str)> {
        self.settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn page_created(&self, id: &str) -> Value {
        self.site
            .content_event("avi:confluence:created:page", "page", id, "From Forge")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_verified_delivery_lands_on_the_topic_as_a_cloudevent() {
    let world = world().await;
    let forge = Forge::start().await;
    let ingest = world.ingest(&forge.settings()).await;
    let body = forge.page_created("777");
    let answer = ingest
        .send(&forge.site.delivery(&body).expect("sign"))
        .await;
    assert_eq!(answer.status(), 204, "{}", answer.text());
    let event_id = answer.event_id().expect("event id").to_string();

    let records = world.records(EVENTS_TOPIC).await;
    assert_eq!(records.len(), 1);
    let record = &records[0];
    let key = site_tenant_key(&forge.site.cloud_id);
    assert_eq!(record.key(), Some(key.as_bytes()));
    assert_eq!(record.payload(), Some(body.to_string().as_bytes()));
    assert_eq!(header(record, "ce_specversion").as_deref(), Some("1.0"));
    assert_eq!(header(record, "ce_id"), Some(event_id));
    assert_eq!(
        header(record, "ce_type").as_deref(),
        Some("com.atlassian.forge.avi:confluence:created:page")
    );
    assert_eq!(
        header(record, "ce_source").as_deref(),
        Some(forge.site.api_base_url.as_str())
    );
    assert_eq!(header(record, "ce_subject").as_deref(), Some("777"));
    assert_eq!(header(record, "ce_clientkey"), Some(key));

    // The system token is kept, only encrypted, and travels nowhere.
    let token = forge.site.system_token.as_bytes();
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_ciphertext FROM forge_installations")
        .fetch_one(&world.pool().await)
        .await
        .expect("installation row");
    assert!(!stored.windows(token.len()).any(|w| w == token));
    assert!(!payload_text(record).contains(&forge.site.system_token));
    if let Some(headers) = record.headers() {
        for h in headers.iter() {
            assert!(
                !h.value
                    .is_some_and(|v| v.windows(token.len()).any(|w| w == token)),
                "header {} carries the token",
                h.key
            );
        }
    }
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_tokens_are_refused_with_their_code_and_publish_nothing() {
    let world = world().await;
    let forge = Forge::start().await;
    let ingest = world.ingest(&forge.settings()).await;
    let site = &forge.site;
    let body = forge.page_created("1");
    let token = site.token();
    let now = tributary_common::connect::token::now_unix();
    let stranger = InstallKey::new(FIT_KID, INSTALL_KEY_2, INSTALL_PUB_2);
    let hs256 = token
        .clone()
        .header("kid", FIT_KID)
        .hs256(tributary_devkit::INSTALL_PUB_1)
        .expect("sign");
    let cases: Vec<(&str, Raw, u16, &str)> = vec![
        (
            "no token",
            site.delivery_with(&body, "x")
                .without_header("authorization"),
            401,
            "missing_token",
        ),
        (
            "not a JWT",
            site.delivery_with(&body, "abc"),
            400,
            "malformed",
        ),
        (
            "forged signature",
            site.delivery_with(&body, &stranger.sign(&token).expect("sign")),
            401,
            "bad_signature",
        ),
        (
            "expired",
            site.delivery_with(
                &body,
                &site
                    .sign(&token.clone().claim("exp", now - 300))
                    .expect("sign"),
            ),
            401,
            "expired",
        ),
        (
            "wrong audience",
            site.delivery_with(
                &body,
                &site
                    .sign(&token.clone().claim(
                        "aud",
                        "ari:cloud:ecosystem::app/00000000-0000-4000-8000-000000000000",
                    ))
                    .expect("sign"),
            ),
            401,
            "wrong_audience",
        ),
        (
            "HS256 keyed with the public key",
            site.delivery_with(&body, &hs256),
            401,
            "unsupported_alg",
        ),
        (
            "alg none",
            site.delivery_with(&body, &token.forged("none", "")),
            401,
            "unsupported_alg",
        ),
        (
            "apiBaseUrl off the allowlist",
            {
                let mut evil = site.clone();
                evil.api_base_url = "https://api.evil.example/ex/confluence/x".into();
                evil.delivery(&body).expect("sign")
            },
            401,
            "api_host_not_allowed",
        ),
        (
            "no eventType",
            site.delivery(&json!({"content": {"id": "1"}}))
                .expect("sign"),
            400,
            "malformed_body",
        ),
    ];
    for (name, request, status, code) in &cases {
        let answer = ingest.send(request).await;
        assert_eq!(answer.status(), *status, "{name}: {}", answer.text());
        assert_eq!(answer.code(), *code, "{name}");
    }
    assert!(
        world.records(EVENTS_TOPIC).await.is_empty(),
        "nothing published"
    );
    let metrics = ingest.metrics().await;
    for code in [
        "bad_signature",
        "expired",
        "wrong_audience",
        "unsupported_alg",
        "api_host_not_allowed",
    ] {
        let line = format!("tributary_ingest_rejected_total{{reason=\"{code}\"}}");
        assert!(metrics.contains(&line), "metrics lack {line}");
    }
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_delivery_keeps_its_event_id_and_the_jwks_is_fetched_once() {
    let world = world().await;
    let forge = Forge::start().await;
    let ingest = world.ingest(&forge.settings()).await;
    // Two views of one page by one user: identical bodies, two events.
    let body = forge
        .site
        .content_event("avi:confluence:viewed:page", "page", "42", "Viewed");
    let send = |body: Value| {
        let request = forge.site.delivery(&body).expect("sign");
        let ingest = &ingest;
        async move { ingest.send(&request).await }
    };
    let first = send(body.clone()).await;
    let second = send(body.clone()).await;
    let retry = send(retried(&body, 1)).await;
    let retry_again = send(retried(&body, 2)).await;
    for answer in [&first, &second, &retry, &retry_again] {
        assert_eq!(answer.status(), 204, "{}", answer.text());
    }
    assert_ne!(
        first.event_id(),
        second.event_id(),
        "first deliveries are distinct"
    );
    assert_eq!(
        retry.event_id(),
        second.event_id(),
        "a retry repeats the latest"
    );
    assert_eq!(retry_again.event_id(), second.event_id());
    for i in 0..6 {
        let other = forge.page_created(&format!("p{i}"));
        assert_eq!(send(other).await.status(), 204);
    }
    assert_eq!(forge.jwks.hits(), 1, "one JWKS fetch for every event");
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_route_is_off_without_an_app_id_and_served_under_the_base_path() {
    let world = world().await;
    let forge = Forge::start().await;
    let off = world.ingest(&[]).await;
    let answer = off
        .send(&forge.site.delivery(&forge.page_created("1")).expect("sign"))
        .await;
    assert_eq!(answer.status(), 404);
    assert_eq!(answer.code(), "not_found");
    off.stop().await.expect("clean stop");

    let mut settings = forge.settings();
    settings.push((
        "TRIBUTARY_APP_BASE_URL",
        "https://app.example.com/tributary",
    ));
    let on = world.ingest(&settings).await;
    let mut request = forge.site.delivery(&forge.page_created("2")).expect("sign");
    request.target = format!("/tributary{}", request.target);
    assert_eq!(on.send(&request).await.status(), 204);
    on.stop().await.expect("clean stop");
}

/// A Connect `installed` of `tenant` naming the Forge site's installation (Connect on
/// Forge sends it), which links the two identities.
async fn install_linked(ingest: &Ingest, forge: &Forge, tenant: &Tenant) {
    let mut install = tenant.lifecycle_body("installed");
    install["installationId"] = json!(forge.site.installation_id);
    let target = "/lifecycle/installed";
    let token = install_token(&tenant.client_key, target, APP_BASE_URL, KID, INSTALL_KEY_1);
    let installed = ingest
        .send(&Raw::post(target, &install).token(&token))
        .await;
    assert_eq!(installed.status(), 204, "{}", installed.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_linked_connect_tenant_gets_both_kinds_in_order_under_one_key() {
    let world = world().await;
    let forge = Forge::start().await;
    let ingest = world.ingest(&forge.settings()).await;
    let tenant = Tenant::new("linked");
    install_linked(&ingest, &forge, &tenant).await;

    let mut ids = Vec::new();
    for round in 0..3 {
        let connect = ingest
            .webhook(
                &tenant,
                "page_created",
                &page_event(&format!("connect-{round}")),
            )
            .await;
        assert_eq!(connect.status(), 204);
        ids.push(connect.event_id().expect("id").to_string());
        let delivered = ingest
            .send(
                &forge
                    .site
                    .delivery(&forge.page_created(&format!("forge-{round}")))
                    .expect("sign"),
            )
            .await;
        assert_eq!(delivered.status(), 204, "{}", delivered.text());
        ids.push(delivered.event_id().expect("id").to_string());
    }
    let records = world.records(EVENTS_TOPIC).await;
    assert_eq!(records.len(), 6);
    let partition = records[0].partition();
    let mut ordered: Vec<_> = records.iter().collect();
    ordered.sort_by_key(|r| r.offset());
    for record in &ordered {
        assert_eq!(record.key(), Some(tenant.client_key.as_bytes()));
        assert_eq!(record.partition(), partition, "one key, one partition");
        assert_eq!(
            header(record, "ce_source").as_deref(),
            Some(tenant.base_url.as_str())
        );
    }
    let seen: Vec<String> = ordered.iter().filter_map(|r| header(r, "ce_id")).collect();
    assert_eq!(seen, ids, "in the order they were acknowledged");

    // Forge's uninstall drives the same tenant's status.
    let uninstall = forge.site.lifecycle_event("avi:forge:uninstalled:app");
    let answer = ingest
        .send(&forge.site.delivery(&uninstall).expect("sign"))
        .await;
    assert_eq!(answer.status(), 204, "{}", answer.text());
    let store = TenantStore::new(world.pool().await, test_keyring());
    let after = store
        .get(&tenant.client_key)
        .await
        .expect("read")
        .expect("known");
    assert_eq!(after.status, TenantStatus::Uninstalled);
    // The Connect routes know at once: the tenant's webhooks are refused now.
    let refused = ingest
        .webhook(&tenant, "page_created", &page_event("after-uninstall"))
        .await;
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.code(), "tenant_uninstalled");
    ingest.stop().await.expect("clean stop");
}

/// Forge waits 5 s for an answer; with the default deadline and the default (5 s) publish
/// timeout, a delivery the broker cannot take must still get its 503 before then, and
/// Forge's retry once the broker is back lands under the same event id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_while_the_broker_is_down_answers_503_before_forge_gives_up() {
    if skip_without_fault_injection(
        "a_delivery_while_the_broker_is_down_answers_503_before_forge_gives_up",
    ) {
        return;
    }
    let world = world().await;
    let forge = Forge::start().await;
    let defaults = tributary_common::Config::defaults().expect("defaults");
    let publish_timeout = defaults.ingest_publish_timeout_ms.to_string();
    let mut settings = forge.settings();
    // The world shortens the publish timeout; this test runs on the default.
    settings.push(("TRIBUTARY_INGEST_PUBLISH_TIMEOUT_MS", &publish_timeout));
    let ingest = world.ingest(&settings).await;
    // The installation and the JWKS are known before the outage.
    let warm_up = ingest
        .send(&forge.site.delivery(&forge.page_created("1")).expect("sign"))
        .await;
    assert_eq!(warm_up.status(), 204, "{}", warm_up.text());

    world.broker_down().await;
    let body = forge.page_created("broker-down");
    let started = std::time::Instant::now();
    let refused = ingest
        .send(&forge.site.delivery(&body).expect("sign"))
        .await;
    let waited = started.elapsed();
    assert_eq!(refused.status(), 503, "{}", refused.text());
    assert!(
        ["broker_unavailable", "deadline_exceeded"].contains(&refused.code().as_str()),
        "{}",
        refused.text()
    );
    assert!(
        waited < std::time::Duration::from_millis(4800),
        "answered after {waited:?}, too late for Forge"
    );

    world.broker_up().await;
    let mut accepted = None;
    for count in 1..=30 {
        let retry = retried(&body, count);
        let answer = ingest
            .send(&forge.site.delivery(&retry).expect("sign"))
            .await;
        if answer.status() == 204 {
            accepted = answer.event_id().map(str::to_string);
            break;
        }
        assert_eq!(answer.status(), 503, "{}", answer.text());
    }
    let accepted = accepted.expect("accepted once the broker is back");
    let records = world.records(EVENTS_TOPIC).await;
    let landed: Vec<_> = records
        .iter()
        .filter(|r| payload_text(r).contains("broker-down"))
        .collect();
    assert!(!landed.is_empty(), "the retry is on the topic");
    for record in landed {
        // Whatever the broker took after the 503 travels under the same id.
        assert_eq!(header(record, "ce_id").as_deref(), Some(accepted.as_str()));
    }
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forge_install_after_an_uninstall_revives_the_tenant() {
    let world = world().await;
    let forge = Forge::start().await;
    let ingest = world.ingest(&forge.settings()).await;
    let tenant = Tenant::new("revived");
    install_linked(&ingest, &forge, &tenant).await;

    let pool = world.pool().await;
    let tenants = TenantStore::new(pool.clone(), test_keyring());
    let installations = ForgeStore::new(pool, test_keyring());
    let lifecycle = |event: &str| forge.site.delivery(&forge.site.lifecycle_event(event));

    let answer = ingest
        .send(&lifecycle("avi:forge:uninstalled:app").expect("sign"))
        .await;
    assert_eq!(answer.status(), 204, "{}", answer.text());
    let status = |tenant: Option<tributary_common::store::Tenant>| tenant.map(|t| t.status);
    assert_eq!(
        status(tenants.get(&tenant.client_key).await.expect("read")),
        Some(TenantStatus::Uninstalled)
    );
    let refused = ingest
        .webhook(&tenant, "page_created", &page_event("while-uninstalled"))
        .await;
    assert_eq!(refused.code(), "tenant_uninstalled");

    let answer = ingest
        .send(&lifecycle("avi:forge:installed:app").expect("sign"))
        .await;
    assert_eq!(answer.status(), 204, "{}", answer.text());
    assert_eq!(
        status(tenants.get(&tenant.client_key).await.expect("read")),
        Some(TenantStatus::Installed)
    );
    let forge_status = installations
        .by_installation(&forge.site.installation_id)
        .await
        .expect("read")
        .map(|i| i.status);
    assert_eq!(forge_status, Some(ForgeStatus::Installed));
    // The Connect routes know at once: the tenant's webhooks are taken again.
    let taken = ingest
        .webhook(&tenant, "page_created", &page_event("after-reinstall"))
        .await;
    assert_eq!(taken.status(), 204, "{}", taken.text());
    ingest.stop().await.expect("clean stop");
}
