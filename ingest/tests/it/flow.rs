//! The accepted path: install, webhooks, lifecycle order, secret rotation, routing.

use chrono_free::is_rfc3339_millis;
use rdkafka::Message;
use serde_json::Value;
use tributary_common::store::{TenantStatus, TenantStore};
use tributary_devkit::test_keyring;
use tributary_ingest::app::EVENT_ID_HEADER;

use crate::harness::*;

/// Just enough of a time check without another dependency: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
mod chrono_free {
    pub fn is_rfc3339_millis(text: &str) -> bool {
        let b = text.as_bytes();
        b.len() == 24
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'.'
            && b[23] == b'Z'
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn install_then_webhook_puts_exactly_the_expected_record_on_the_topic() {
    let world = world().await;
    let ingest = world.ingest(&[]).await;
    let tenant = Tenant::new("acme");

    let installed = ingest.install(&tenant).await;
    assert_eq!(installed.status(), 204);

    // Odd spacing on purpose: the record must carry these bytes, not a re-serialisation.
    let body =
        b"{ \"page\" : {\"id\": 12345, \"title\":\"Hello\"} ,\n \"userAccountId\":\"557058:x\" }  ";
    let response = ingest.webhook(&tenant, "page_created", body).await;
    assert_eq!(response.status(), 204);
    let event_id = response
        .headers()
        .get(EVENT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .expect("event id header")
        .to_string();

    let records = world.records(EVENTS_TOPIC).await;
    assert_eq!(records.len(), 1, "exactly one record");
    let record = &records[0];
    assert_eq!(record.key(), Some(tenant.client_key.as_bytes()));
    assert_eq!(record.payload(), Some(&body[..]));
    assert_eq!(header(record, "ce_specversion").as_deref(), Some("1.0"));
    assert_eq!(header(record, "ce_id"), Some(event_id));
    assert_eq!(
        header(record, "ce_source").as_deref(),
        Some(tenant.base_url.as_str())
    );
    assert_eq!(
        header(record, "ce_type").as_deref(),
        Some("com.atlassian.confluence.page_created")
    );
    assert!(is_rfc3339_millis(
        &header(record, "ce_time").expect("ce_time")
    ));
    assert_eq!(header(record, "ce_subject").as_deref(), Some("12345"));
    assert_eq!(
        header(record, "ce_clientkey").as_deref(),
        Some(tenant.client_key.as_str())
    );
    assert_eq!(
        header(record, "content-type").as_deref(),
        Some("application/json")
    );

    // The lifecycle event went to its routed topic, without the secret.
    let lifecycle = world.records(LIFECYCLE_TOPIC).await;
    assert_eq!(lifecycle.len(), 1);
    assert_eq!(
        header(&lifecycle[0], "ce_type").as_deref(),
        Some("com.atlassian.connect.lifecycle.installed")
    );
    assert_eq!(lifecycle[0].key(), Some(tenant.client_key.as_bytes()));
    let published = payload_text(&lifecycle[0]);
    assert!(!published.contains(&tenant.secret));
    assert!(!published.contains("sharedSecret"));
    let published: Value = serde_json::from_str(&published).expect("lifecycle JSON");
    assert_eq!(published["clientKey"], tenant.client_key.as_str());

    // The tenant row holds the secret only encrypted.
    let row: String = sqlx::query_scalar("SELECT row_to_json(t)::text FROM tenants t")
        .fetch_one(&world.pool().await)
        .await
        .expect("tenant row");
    assert!(row.contains(&tenant.client_key));
    assert!(!row.contains(&tenant.secret));
    let ciphertext: Vec<u8> = sqlx::query_scalar("SELECT secret_ciphertext FROM tenants")
        .fetch_one(&world.pool().await)
        .await
        .expect("ciphertext");
    assert!(
        !ciphertext
            .windows(tenant.secret.len())
            .any(|w| w == tenant.secret.as_bytes())
    );

    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_tokens_routing_rules_and_the_descriptor_agree() {
    let world = world().await;
    let ingest = world
        .ingest(&[(
            "TRIBUTARY_INGEST_WEBHOOK_EVENTS",
            "page_created,page_viewed,comment_created",
        )])
        .await;
    let tenant = Tenant::new("globex");
    assert_eq!(ingest.install(&tenant).await.status(), 204);

    // The token in a `jwt` query parameter; the qsh leaves that parameter out.
    let target = "/webhooks/page_created?spaceKey=DEV&a=b%20c";
    let token = tenant.token(target);
    let request = Raw::post_bytes(&format!("{target}&jwt={token}"), page_event("via-query"));
    assert_eq!(ingest.send(&request).await.status(), 204);

    // `*_viewed` is routed to its own topic.
    let viewed = ingest
        .webhook(&tenant, "page_viewed", &page_event("viewed"))
        .await;
    assert_eq!(viewed.status(), 204);
    let views = world.records(VIEWS_TOPIC).await;
    assert_eq!(views.len(), 1);
    assert!(payload_text(&views[0]).contains("viewed"));
    let events = world.records(EVENTS_TOPIC).await;
    assert_eq!(events.len(), 1);
    assert!(payload_text(&events[0]).contains("via-query"));

    // The descriptor advertises exactly the accepted events; others are 404.
    let descriptor: Value = ingest
        .get("/atlassian-connect.json")
        .await
        .json()
        .expect("descriptor JSON");
    assert_eq!(descriptor["key"], APP_KEY);
    assert_eq!(descriptor["baseUrl"], APP_BASE_URL);
    assert_eq!(descriptor["apiMigrations"]["signed-install"], true);
    let mut advertised: Vec<String> = descriptor["modules"]["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .map(|hook| {
            assert_eq!(
                hook["url"].as_str().map(str::to_string),
                hook["event"].as_str().map(|e| format!("/webhooks/{e}"))
            );
            hook["event"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    advertised.sort();
    assert_eq!(
        advertised,
        ["comment_created", "page_created", "page_viewed"]
    );
    for kind in ["installed", "uninstalled", "enabled", "disabled"] {
        assert_eq!(descriptor["lifecycle"][kind], format!("/lifecycle/{kind}"));
    }
    let refused = ingest
        .webhook(&tenant, "page_updated", &page_event("x"))
        .await;
    assert_eq!(refused.status(), 404);
    assert_eq!(refused.code(), "unknown_event");

    let metrics = ingest.metrics().await;
    for expected in [
        "tributary_ingest_requests_total{route=\"webhook\",event=\"page_created\",outcome=\"accepted\"}",
        "tributary_ingest_requests_total{route=\"webhook\",event=\"unknown\",outcome=\"rejected\"}",
        "tributary_ingest_rejected_total{reason=\"unknown_event\"}",
        "tributary_ingest_events_published_total{event=\"page_viewed\"}",
        "tributary_ingest_request_duration_seconds_bucket{route=\"installed\"",
        "tributary_ingest_broker_ack_duration_seconds_bucket",
        "tributary_ingest_in_flight_requests",
    ] {
        assert!(metrics.contains(expected), "metrics lack {expected}");
    }
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_secret_is_picked_up_at_once_also_by_a_replica_that_cached_the_old_one() {
    let world = world().await;
    // A long time-to-live, so expiry cannot explain anything below.
    let long_ttl = [("TRIBUTARY_INGEST_SECRET_CACHE_TTL_SECONDS", "3600")];
    let first = world.ingest(&long_ttl).await;
    let second = world.ingest(&long_ttl).await;
    let old = Tenant::new("initech");
    assert_eq!(first.install(&old).await.status(), 204);
    for ingest in [&first, &second] {
        let response = ingest
            .webhook(&old, "page_created", &page_event("old"))
            .await;
        assert_eq!(response.status(), 204, "both replicas cache the old secret");
    }

    // Rotation through the first replica, which announces the change to the others.
    let new = old.rotated();
    assert_eq!(first.install(&new).await.status(), 204, "reinstall rotates");
    let refused = first
        .webhook(&old, "page_created", &page_event("stale"))
        .await;
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.code(), "bad_signature");
    let accepted = first
        .webhook(&new, "page_created", &page_event("fresh"))
        .await;
    assert_eq!(accepted.status(), 204);
    // The announcement reaches the second replica asynchronously (normally before the next
    // request does); a bounded wait keeps the test honest on a loaded machine.
    let mut old_accepted_by_second = 0;
    let mut refused_by_second = false;
    for _ in 0..100 {
        let response = second
            .webhook(&old, "page_viewed", &page_event("stale-second"))
            .await;
        if response.status() == 401 {
            assert_eq!(response.code(), "bad_signature");
            refused_by_second = true;
            break;
        }
        old_accepted_by_second += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        refused_by_second,
        "the second replica refuses the old secret"
    );
    println!(
        "old secret accepted by the second replica {old_accepted_by_second} time(s) after rotation"
    );
    let accepted = second
        .webhook(&new, "page_created", &page_event("fresh"))
        .await;
    assert_eq!(accepted.status(), 204);

    // A rotation the second replica was never told about (written straight to the store,
    // as if the announcement had been lost): the bad signature makes it re-read the tenant.
    let newest = new.rotated();
    let store = TenantStore::new(world.pool().await, test_keyring());
    let payload = tributary_common::connect::LifecyclePayload::parse(
        newest.lifecycle_body("installed").to_string().as_bytes(),
    )
    .expect("install body");
    store
        .record_install(&payload, "direct-write")
        .await
        .expect("rotated in the store");
    let accepted = second
        .webhook(&newest, "page_created", &page_event("newest"))
        .await;
    assert_eq!(accepted.status(), 204, "picked up on the first try");
    let refused = second
        .webhook(&new, "page_created", &page_event("stale"))
        .await;
    assert_eq!(refused.status(), 401);

    let bodies: Vec<String> = world
        .records(EVENTS_TOPIC)
        .await
        .iter()
        .map(payload_text)
        .collect();
    assert_eq!(bodies.iter().filter(|b| b.contains("\"old\"")).count(), 2);
    assert_eq!(bodies.iter().filter(|b| b.contains("\"fresh\"")).count(), 2);
    assert_eq!(
        bodies.iter().filter(|b| b.contains("\"newest\"")).count(),
        1
    );
    assert!(!bodies.iter().any(|b| b.contains("\"stale\"")));
    first.stop().await.expect("clean stop");
    second.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disabled_and_uninstalled_in_either_order_end_uninstalled() {
    let world = world().await;
    let ingest = world.ingest(&[]).await;
    let store = TenantStore::new(world.pool().await, test_keyring());
    let a = Tenant::new("umbrella");
    let b = Tenant::new("hooli");
    for tenant in [&a, &b] {
        assert_eq!(ingest.install(tenant).await.status(), 204);
        assert_eq!(ingest.notify(tenant, "enabled").await.status(), 204);
    }
    let (disabled, uninstalled) = tokio::join!(ingest.notify(&a, "disabled"), ingest.uninstall(&a));
    assert_eq!(
        (disabled.status().as_u16(), uninstalled.status().as_u16()),
        (204, 204)
    );
    assert_eq!(ingest.uninstall(&b).await.status(), 204);
    assert_eq!(ingest.notify(&b, "disabled").await.status(), 204);
    for tenant in [&a, &b] {
        let stored = store
            .get(&tenant.client_key)
            .await
            .expect("store")
            .expect("tenant kept");
        assert_eq!(stored.status, TenantStatus::Uninstalled);
        let refused = ingest
            .webhook(tenant, "page_created", &page_event("late"))
            .await;
        assert_eq!(refused.status(), 401);
        assert_eq!(refused.code(), "tenant_uninstalled");
    }
    // Reinstalling brings a tenant back.
    assert_eq!(ingest.install(&b).await.status(), 204);
    let back = ingest
        .webhook(&b, "page_created", &page_event("back"))
        .await;
    assert_eq!(back.status(), 204);

    let lifecycle = world.records(LIFECYCLE_TOPIC).await;
    assert_eq!(lifecycle.len(), 2 * 4 + 1);
    assert!(
        lifecycle
            .iter()
            .all(|r| !payload_text(r).contains("secret-"))
    );
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn legacy_installs_only_when_enabled_and_never_over_a_known_secret() {
    let world = world().await;
    let ingest = world
        .ingest(&[("TRIBUTARY_INGEST_ALLOW_LEGACY_INSTALLS", "true")])
        .await;
    let tenant = Tenant::new("legacy");
    let unsigned = |t: &Tenant| Raw::post("/lifecycle/installed", &t.lifecycle_body("installed"));

    assert_eq!(
        ingest.send(&unsigned(&tenant)).await.status(),
        204,
        "first install"
    );
    let takeover = tenant.rotated();
    let refused = ingest.send(&unsigned(&takeover)).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.code(), "missing_token");
    // Signed with the new secret (the attacker's) instead of the current one.
    let forged = Raw::post(
        "/lifecycle/installed",
        &takeover.lifecycle_body("installed"),
    )
    .token(&takeover.token("/lifecycle/installed"));
    let refused = ingest.send(&forged).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.code(), "bad_signature");
    // A genuine reinstall is signed with the current secret and may carry a new one.
    let genuine = Raw::post(
        "/lifecycle/installed",
        &takeover.lifecycle_body("installed"),
    )
    .token(&tenant.token("/lifecycle/installed"));
    assert_eq!(ingest.send(&genuine).await.status(), 204);
    let old = ingest
        .webhook(&tenant, "page_created", &page_event("x"))
        .await;
    assert_eq!(old.status(), 401);
    let new = ingest
        .webhook(&takeover, "page_created", &page_event("y"))
        .await;
    assert_eq!(new.status(), 204);
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_base_url_with_a_path_works_behind_proxies_that_strip_it_and_ones_that_do_not() {
    let world = world().await;
    let base = "https://apps.example.com/tributary";
    let ingest = world.ingest(&[("TRIBUTARY_APP_BASE_URL", base)]).await;
    let tenant = Tenant::new("proxied");
    // Confluence signs paths relative to the app's base URL.
    let token = install_token(
        &tenant.client_key,
        "/lifecycle/installed",
        base,
        KID,
        tributary_devkit::INSTALL_KEY_1,
    );
    let body = tenant.lifecycle_body("installed");
    let installed = ingest
        .send(&Raw::post("/tributary/lifecycle/installed", &body).token(&token))
        .await;
    assert_eq!(installed.status(), 204);
    for target in ["/tributary/webhooks/page_created", "/webhooks/page_created"] {
        let token = tenant.token("/webhooks/page_created");
        let response = ingest
            .send(&Raw::post_bytes(target, page_event(target)).token(&token))
            .await;
        assert_eq!(response.status(), 204, "{target}");
    }
    let descriptor: Value = ingest
        .get("/tributary/atlassian-connect.json")
        .await
        .json()
        .expect("descriptor");
    assert_eq!(descriptor["baseUrl"], base);
    assert_eq!(world.records(EVENTS_TOPIC).await.len(), 2);
    ingest.stop().await.expect("clean stop");
}
