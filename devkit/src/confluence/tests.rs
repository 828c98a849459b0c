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
