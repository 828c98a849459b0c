//! The simulator's own checks, by raw HTTP; the REST client against it is tested in the
//! processor's tests.

use reqwest::Method;
use serde_json::json;
use tributary_common::connect::SharedSecret;
use tributary_common::connect::token::{now_unix, sign_hs256};
use tributary_common::shutdown::Shutdown;

use super::*;

const APP_KEY: &str = "com.example.simulated";
const CLIENT_KEY: &str = "tenant-simulated";
const SECRET: &str = "a-shared-secret-for-the-simulated-site";

async fn site() -> (Simulator, Shutdown) {
    let stop = Shutdown::new();
    let simulator = Simulator::start(SimulatorSettings::new(APP_KEY), stop.clone())
        .await
        .expect("simulator starts");
    simulator.register(CLIENT_KEY, SECRET);
    (simulator, stop)
}

#[tokio::test]
async fn tokens_are_checked_as_confluence_checks_them() {
    let (simulator, stop) = site().await;
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

/// `method target` with `body`, signed as the app for the test tenant.
async fn signed(
    simulator: &Simulator,
    method: Method,
    target: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let now = now_unix();
    let qsh = tributary_common::connect::qsh(method.as_str(), target, BASE_PATH);
    let token = sign_hs256(
        &json!({ "iss": APP_KEY, "aud": [CLIENT_KEY], "qsh": qsh, "iat": now, "exp": now + 180 }),
        &SharedSecret::new(SECRET),
    )
    .expect("sign");
    let mut request = reqwest::Client::new()
        .request(method, format!("http://{}{target}", simulator.addr()))
        .header("authorization", format!("JWT {token}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.expect("answer");
    let status = answer.status().as_u16();
    let json = answer.json().await.unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn marked_comment(value: &str, marker: &str) -> serde_json::Value {
    json!({
        "type": "comment",
        "container": { "id": "42", "type": "page", "status": "current" },
        "body": { "storage": { "representation": "storage", "value": value } },
        "metadata": { "properties": { "tributary-write": { "key": "tributary-write", "value": { "run": marker } } } },
    })
}

#[tokio::test]
async fn content_created_through_v1_keeps_its_properties_for_lookups() {
    let (simulator, stop) = site().await;
    simulator.add_page(CLIENT_KEY, "42", "7", "Home");
    let (status, created) = signed(
        &simulator,
        Method::POST,
        "/wiki/rest/api/content",
        Some(marked_comment("<p>a</p>", "one")),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["type"], "comment");
    signed(
        &simulator,
        Method::POST,
        "/wiki/rest/api/content",
        Some(marked_comment("<p>b</p>", "two")),
    )
    .await;
    assert_eq!(
        simulator.comments(CLIENT_KEY, "42"),
        ["<p>a</p>", "<p>b</p>"]
    );

    let (status, listing) = signed(
        &simulator,
        Method::GET,
        "/wiki/rest/api/content/42/child/comment?expand=metadata.properties.tributary-write&limit=1&location=footer&start=1",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(listing["size"], 1);
    assert_eq!(
        listing.pointer("/results/0/metadata/properties/tributary-write/value/run"),
        Some(&json!("two"))
    );
    assert!(listing.pointer("/_links/next").is_none(), "the last page");

    // Unexpanded, the properties stay out of the answer.
    let (_, listing) = signed(
        &simulator,
        Method::GET,
        "/wiki/rest/api/content/42/child/comment?limit=1&start=0",
        None,
    )
    .await;
    assert!(listing.pointer("/results/0/metadata").is_none());
    assert!(listing.pointer("/_links/next").is_some());

    let (status, space) = signed(&simulator, Method::GET, "/wiki/api/v2/spaces/7", None).await;
    assert_eq!((status, &space["key"]), (200, &json!("S7")));
    let page = json!({
        "type": "page",
        "title": "Notes",
        "space": { "key": "S7" },
        "ancestors": [{ "id": "42" }],
        "body": { "storage": { "representation": "storage", "value": "<p>n</p>" } },
        "metadata": { "properties": { "tributary-write": { "value": { "run": "page" } } } },
    });
    let (status, created) = signed(
        &simulator,
        Method::POST,
        "/wiki/rest/api/content?expand=ancestors",
        Some(page.clone()),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created.pointer("/ancestors/0/id"), Some(&json!("42")));
    let (status, _) = signed(
        &simulator,
        Method::POST,
        "/wiki/rest/api/content",
        Some(page),
    )
    .await;
    assert_eq!(status, 400, "titles are unique in a space");
    let (_, found) = signed(
        &simulator,
        Method::GET,
        "/wiki/rest/api/content?expand=metadata.properties.tributary-write&spaceKey=S7&title=Notes&type=page",
        None,
    )
    .await;
    assert_eq!(found["size"], 1);
    assert_eq!(
        found.pointer("/results/0/metadata/properties/tributary-write/value/run"),
        Some(&json!("page"))
    );
    stop.cancel();
}

#[tokio::test]
async fn a_request_failed_after_its_work_was_still_carried_out() {
    let (simulator, stop) = site().await;
    simulator.add_page(CLIENT_KEY, "42", "7", "Home");
    simulator.misbehave_on(
        "POST",
        Fault::failed_after_work(500),
        FaultSpan::Requests(1),
    );
    let (status, _) = signed(&simulator, Method::GET, "/wiki/rest/api/content/42", None).await;
    assert_eq!(status, 200, "a GET passes a POST's fault");
    let (status, _) = signed(
        &simulator,
        Method::POST,
        "/wiki/rest/api/content",
        Some(marked_comment("<p>done</p>", "x")),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(simulator.comments(CLIENT_KEY, "42"), ["<p>done</p>"]);
    stop.cancel();
}
