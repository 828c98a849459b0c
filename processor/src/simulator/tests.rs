use std::time::Duration;

use chrono::Utc;
use reqwest::Method;
use serde_json::json;
use tributary_common::Config;
use tributary_common::connect::SharedSecret;
use tributary_common::connect::token::{now_unix, sign_hs256};
use tributary_common::shutdown::Shutdown;
use tributary_common::store::{Tenant, TenantStatus};

use super::*;
use crate::confluence::{ApiRequest, ConfluenceClient, ConfluenceClients, NewPage, PageUpdate};

const APP_KEY: &str = "com.example.simulated";
const CLIENT_KEY: &str = "tenant-simulated";
const SECRET: &str = "a-shared-secret-for-the-simulated-site";

fn tenant(base_url: &str) -> Tenant {
    let now = Utc::now();
    Tenant {
        client_key: CLIENT_KEY.into(),
        app_key: APP_KEY.into(),
        base_url: base_url.into(),
        display_url: None,
        display_url_servicedesk_help_center: None,
        product_type: Some("confluence".into()),
        description: None,
        server_version: None,
        plugins_version: None,
        oauth_client_id: None,
        installation_id: None,
        entitlement_id: None,
        entitlement_number: None,
        service_entitlement_number: None,
        status: TenantStatus::Enabled,
        installed_at: now,
        enabled_at: Some(now),
        disabled_at: None,
        uninstalled_at: None,
        status_changed_at: now,
        updated_at: now,
    }
}

async fn site() -> (Simulator, ConfluenceClient, Shutdown) {
    let stop = Shutdown::new();
    let simulator = Simulator::start(SimulatorSettings::new(APP_KEY), stop.clone())
        .await
        .expect("simulator starts");
    simulator.register(CLIENT_KEY, SECRET);
    let config = Config::load_from(
        None,
        [
            ("TRIBUTARY_TENANT_HOST_ALLOWLIST", "127.0.0.1"),
            ("TRIBUTARY_APP_KEY", APP_KEY),
            ("TRIBUTARY_CONFLUENCE_RETRY_INITIAL_MS", "10"),
            ("TRIBUTARY_CONFLUENCE_RETRY_MAX_MS", "50"),
            ("TRIBUTARY_CONFLUENCE_REQUEST_TIMEOUT_MS", "500"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .expect("settings");
    let client = ConfluenceClients::from_config(&config)
        .expect("clients")
        .for_tenant(&tenant(&simulator.base_url()), SharedSecret::new(SECRET))
        .expect("loopback is allowed");
    (simulator, client, stop)
}

#[tokio::test]
async fn the_typed_helpers_get_realistic_answers() {
    let (simulator, client, stop) = site().await;
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
    let stale = client.update_page(&created.id, &update).await;
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
    assert_eq!(calls.len() as u64, simulator.received());
    stop.cancel();
}

#[tokio::test]
async fn tokens_are_checked_as_confluence_checks_them() {
    let (simulator, _client, stop) = site().await;
    simulator.add_page(CLIENT_KEY, "42", "7", "Home");
    let http = reqwest::Client::new();
    let target = "/wiki/rest/api/content/42";
    let url = format!("http://{}{target}", simulator.addr());
    let sign = |claims: serde_json::Value, secret: &str| {
        sign_hs256(&claims, &SharedSecret::new(secret)).expect("sign")
    };
    let now = now_unix();
    let good_qsh = tributary_common::connect::qsh("GET", target, BASE_PATH);
    let claims = |iss: &str, aud: serde_json::Value, qsh: &str, iat: i64| json!({ "iss": iss, "aud": aud, "qsh": qsh, "iat": iat, "exp": iat + 180 });
    let cases = [
        (
            "good",
            Some(sign(
                claims(APP_KEY, json!([CLIENT_KEY]), &good_qsh, now),
                SECRET,
            )),
            200,
        ),
        ("no token", None, 401),
        (
            "wrong secret",
            Some(sign(
                claims(APP_KEY, json!([CLIENT_KEY]), &good_qsh, now),
                "guess",
            )),
            401,
        ),
        (
            "other app",
            Some(sign(
                claims("com.other", json!([CLIENT_KEY]), &good_qsh, now),
                SECRET,
            )),
            401,
        ),
        (
            "unknown tenant",
            Some(sign(
                claims(APP_KEY, json!(["nobody"]), &good_qsh, now),
                SECRET,
            )),
            401,
        ),
        (
            "qsh of another path",
            Some(sign(
                claims(
                    APP_KEY,
                    json!([CLIENT_KEY]),
                    &tributary_common::connect::qsh("GET", "/wiki/rest/api/content/43", BASE_PATH),
                    now,
                ),
                SECRET,
            )),
            401,
        ),
        (
            "expired",
            Some(sign(
                claims(APP_KEY, json!([CLIENT_KEY]), &good_qsh, now - 3600),
                SECRET,
            )),
            401,
        ),
    ];
    for (name, token, status) in cases {
        let mut request = http.request(Method::GET, &url);
        if let Some(token) = token {
            request = request.header("authorization", format!("JWT {token}"));
        }
        let answer = request.send().await.expect("answer");
        assert_eq!(answer.status().as_u16(), status, "{name}");
    }
    let refused = simulator
        .calls()
        .iter()
        .filter(|c| !c.verdict.is_accepted())
        .count();
    assert_eq!(refused, 6);
    stop.cancel();
}

#[tokio::test]
async fn faults_are_answered_then_it_recovers() {
    let (simulator, client, stop) = site().await;
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
    stop.cancel();
}
