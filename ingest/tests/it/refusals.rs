//! Bad requests get their documented status and code, and nothing reaches a topic.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tributary_common::connect::token::now_unix;
use tributary_devkit::{INSTALL_KEY_1, INSTALL_KEY_2, INSTALL_PUB_1, Token};

use crate::harness::*;

struct Case {
    name: &'static str,
    request: Raw,
    status: u16,
    code: &'static str,
}

fn case(name: &'static str, request: Raw, status: u16, code: &'static str) -> Case {
    Case {
        name,
        request,
        status,
        code,
    }
}

const HOOK: &str = "/webhooks/page_created";
const MAX_BODY: usize = 64 * 1024;

fn cases(known: &Tenant, gone: &Tenant) -> Vec<Case> {
    let now = now_unix();
    let body = page_event("bad");
    let hook = |token: &str| Raw::post_bytes(HOOK, body.clone()).token(token);
    // The known tenant's webhook token, issued at `iat` and living `ttl` seconds.
    let token = |iat: i64, ttl: i64| {
        Token::from_confluence(&known.client_key)
            .issued_at(iat)
            .ttl(ttl)
            .for_request("POST", HOOK)
    };
    let sign = |token: Token, secret: &str| token.hs256(secret).expect("sign");
    let stranger = Tenant::new("stranger");
    let newcomer = Tenant::new("newcomer");
    let install = |body: serde_json::Value, token: &str| {
        Raw::post("/lifecycle/installed", &body).token(token)
    };
    let install_target = "/lifecycle/installed";
    let good_install_token = install_token(
        &newcomer.client_key,
        install_target,
        APP_BASE_URL,
        KID,
        INSTALL_KEY_1,
    );
    let mut foreign_app = newcomer.lifecycle_body("installed");
    foreign_app["key"] = json!("com.other.app");
    let mut outside = newcomer.lifecycle_body("installed");
    outside["baseUrl"] = json!("https://newcomer.evil.example.com/wiki");
    let mut no_client_key = newcomer.lifecycle_body("installed");
    if let Some(map) = no_client_key.as_object_mut() {
        map.remove("clientKey");
    }

    let mut no_secret = newcomer.lifecycle_body("installed");
    if let Some(map) = no_secret.as_object_mut() {
        map.remove("sharedSecret");
    }
    let mut nul_client_key = newcomer.lifecycle_body("installed");
    nul_client_key["clientKey"] = json!("newcomer\u{0}x");
    let mut nul_enabled = known.lifecycle_body("enabled");
    nul_enabled["clientKey"] = json!("known\u{0}");
    let mut long_description = newcomer.lifecycle_body("installed");
    long_description["description"] = json!("d".repeat(8 * 1024));
    let from_issuer = |iss: &str| {
        Token::from_confluence(iss)
            .for_request("POST", HOOK)
            .hs256(&known.secret)
            .expect("sign")
    };

    vec![
        // Input the database could not hold, or that is absurdly long: the caller's fault.
        case(
            "webhook iss with a NUL",
            hook(&from_issuer(&format!("{}\u{0}", known.client_key))),
            400,
            "malformed",
        ),
        case(
            "webhook iss with a control character",
            hook(&from_issuer("known\u{7}")),
            400,
            "malformed",
        ),
        case(
            "webhook iss of 4 KiB",
            hook(&from_issuer(&"k".repeat(4096))),
            400,
            "malformed",
        ),
        case(
            "signed install without sharedSecret",
            install(no_secret, &good_install_token),
            400,
            "malformed_body",
        ),
        case(
            "install clientKey with a NUL",
            install(nul_client_key, &good_install_token),
            400,
            "malformed_body",
        ),
        case(
            "enabled clientKey with a NUL",
            Raw::post("/lifecycle/enabled", &nul_enabled).token(&known.token("/lifecycle/enabled")),
            400,
            "malformed_body",
        ),
        case(
            "install description of 8 KiB",
            install(long_description, &good_install_token),
            400,
            "malformed_body",
        ),
        // Webhook tokens.
        case(
            "no token",
            Raw::post_bytes(HOOK, body.clone()),
            401,
            "missing_token",
        ),
        case("token is not a JWT", hook("not-a-jwt"), 400, "malformed"),
        case(
            "jwt query parameter is not a JWT",
            Raw::post_bytes(&format!("{HOOK}?jwt=abc.def"), body.clone()),
            400,
            "malformed",
        ),
        case(
            "alg none",
            hook(&token(now, 60).forged("none", "")),
            401,
            "unsupported_alg",
        ),
        case(
            "alg HS512",
            hook(&token(now, 60).forged("HS512", "c2ln")),
            401,
            "unsupported_alg",
        ),
        case(
            "RS256 on a webhook",
            hook(&install_token(
                &known.client_key,
                HOOK,
                APP_BASE_URL,
                KID,
                INSTALL_KEY_1,
            )),
            401,
            "unsupported_alg",
        ),
        case(
            "unknown tenant",
            hook(&stranger.token(HOOK)),
            401,
            "unknown_issuer",
        ),
        case(
            "uninstalled tenant",
            hook(&gone.token(HOOK)),
            401,
            "tenant_uninstalled",
        ),
        case(
            "wrong secret",
            hook(&sign(token(now, 60), "guessed")),
            401,
            "bad_signature",
        ),
        case(
            "expired",
            hook(&sign(token(now - 600, 300), &known.secret)),
            401,
            "expired",
        ),
        case(
            "issued in the future",
            hook(&sign(token(now + 600, 300), &known.secret)),
            401,
            "issued_in_future",
        ),
        case(
            "no qsh",
            hook(&sign(token(now, 60).without("qsh"), &known.secret)),
            401,
            "missing_qsh",
        ),
        case(
            "qsh of another event",
            hook(&known.token("/webhooks/page_updated")),
            401,
            "qsh_mismatch",
        ),
        case(
            "qsh without the query sent",
            Raw::post_bytes(&format!("{HOOK}?spaceKey=DEV"), body.clone())
                .token(&known.token(HOOK)),
            401,
            "qsh_mismatch",
        ),
        case(
            "context-qsh",
            hook(&sign(
                token(now, 60).claim("qsh", "context-qsh"),
                &known.secret,
            )),
            401,
            "context_qsh_not_allowed",
        ),
        // Webhook routes and bodies.
        case(
            "unknown event",
            Raw::post_bytes("/webhooks/page_exploded", body.clone())
                .token(&known.token("/webhooks/page_exploded")),
            404,
            "unknown_event",
        ),
        case(
            "oversize body",
            hook(&known.token(HOOK)).clone_with_body(vec![b' '; MAX_BODY + 1]),
            413,
            "body_too_large",
        ),
        case(
            "not JSON",
            hook(&known.token(HOOK)).clone_with_body(b"page_created!".to_vec()),
            400,
            "malformed_body",
        ),
        case(
            "JSON but not an object",
            hook(&known.token(HOOK)).clone_with_body(b"[1,2,3]".to_vec()),
            400,
            "malformed_body",
        ),
        case(
            "wrong content type",
            hook(&known.token(HOOK)).header("content-type", "text/plain"),
            415,
            "unsupported_content_type",
        ),
        case(
            "no such route",
            Raw::post_bytes("/nowhere", body.clone()),
            404,
            "not_found",
        ),
        // Installs.
        case(
            "install for another app's aud",
            install(
                newcomer.lifecycle_body("installed"),
                &install_token(
                    &newcomer.client_key,
                    install_target,
                    "https://other-app.example.com",
                    KID,
                    INSTALL_KEY_1,
                ),
            ),
            401,
            "wrong_audience",
        ),
        case(
            "unsigned install for a known tenant",
            Raw::post(install_target, &known.rotated().lifecycle_body("installed")),
            401,
            "missing_token",
        ),
        case(
            "install with a baseUrl outside the allowlist",
            install(outside, &good_install_token),
            403,
            "host_not_allowed",
        ),
        case(
            "install signed by another key",
            install(
                newcomer.lifecycle_body("installed"),
                &install_token(
                    &newcomer.client_key,
                    install_target,
                    APP_BASE_URL,
                    KID,
                    INSTALL_KEY_2,
                ),
            ),
            401,
            "bad_signature",
        ),
        case(
            "install with an unknown kid",
            install(
                newcomer.lifecycle_body("installed"),
                &install_token(
                    &newcomer.client_key,
                    install_target,
                    APP_BASE_URL,
                    "no-such-kid",
                    INSTALL_KEY_1,
                ),
            ),
            401,
            "unknown_kid",
        ),
        case(
            "install with a path in the kid",
            install(
                newcomer.lifecycle_body("installed"),
                &install_token(
                    &newcomer.client_key,
                    install_target,
                    APP_BASE_URL,
                    "../keys",
                    INSTALL_KEY_1,
                ),
            ),
            401,
            "invalid_kid",
        ),
        case(
            "install token for another clientKey",
            install(
                newcomer.lifecycle_body("installed"),
                &install_token(
                    &known.client_key,
                    install_target,
                    APP_BASE_URL,
                    KID,
                    INSTALL_KEY_1,
                ),
            ),
            401,
            "issuer_mismatch",
        ),
        case(
            "install signed HS256 with the known secret",
            install(
                known.rotated().lifecycle_body("installed"),
                &known.token(install_target),
            ),
            401,
            "unsupported_alg",
        ),
        case(
            "install qsh for another route",
            install(
                newcomer.lifecycle_body("installed"),
                &install_token(
                    &newcomer.client_key,
                    "/lifecycle/uninstalled",
                    APP_BASE_URL,
                    KID,
                    INSTALL_KEY_1,
                ),
            ),
            401,
            "qsh_mismatch",
        ),
        case(
            "install without clientKey",
            install(no_client_key, &good_install_token),
            400,
            "malformed_body",
        ),
        case(
            "install body says uninstalled",
            install(newcomer.lifecycle_body("uninstalled"), &good_install_token),
            400,
            "event_type_mismatch",
        ),
        case(
            "install for another app's key",
            install(foreign_app, &good_install_token),
            400,
            "app_key_mismatch",
        ),
        // Other lifecycle callbacks.
        case(
            "enabled without a token",
            Raw::post("/lifecycle/enabled", &known.lifecycle_body("enabled")),
            401,
            "missing_token",
        ),
        case(
            "disabled with a wrong secret",
            Raw::post("/lifecycle/disabled", &known.lifecycle_body("disabled"))
                .token(&known.rotated().token("/lifecycle/disabled")),
            401,
            "bad_signature",
        ),
        case(
            "enabled for another tenant's body",
            Raw::post("/lifecycle/enabled", &gone.lifecycle_body("enabled"))
                .token(&known.token("/lifecycle/enabled")),
            401,
            "issuer_mismatch",
        ),
        case(
            "uninstall signed HS256",
            Raw::post(
                "/lifecycle/uninstalled",
                &known.lifecycle_body("uninstalled"),
            )
            .token(&known.token("/lifecycle/uninstalled")),
            401,
            "unsupported_alg",
        ),
    ]
}

trait WithBody {
    fn clone_with_body(self, body: Vec<u8>) -> Raw;
}

impl WithBody for Raw {
    fn clone_with_body(mut self, body: Vec<u8>) -> Raw {
        self.body = body;
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_bad_request_gets_its_status_and_code_and_nothing_is_published() {
    let world = world().await;
    let max_body = MAX_BODY.to_string();
    let ingest = world
        .ingest(&[("TRIBUTARY_INGEST_MAX_BODY_BYTES", &max_body)])
        .await;
    let known = Tenant::new("known");
    let gone = Tenant::new("gone");
    for tenant in [&known, &gone] {
        assert_eq!(ingest.install(tenant).await.status(), 204);
    }
    assert_eq!(ingest.uninstall(&gone).await.status(), 204);

    let cases = cases(&known, &gone);
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for case in &cases {
        let response = ingest.send(&case.request).await;
        let status = response.status().as_u16();
        let code = response.code();
        if (status, code.as_str()) != (case.status, case.code) {
            failures.push(format!(
                "{}: expected {} {}, got {status} {code}",
                case.name, case.status, case.code
            ));
        }
    }

    // A chunked body has no length to refuse up front; it is cut off while being read.
    let (status, answer) = post_chunked(
        ingest.addr,
        HOOK,
        &known.token(HOOK),
        &vec![b' '; 2 * MAX_BODY],
    )
    .await;
    if status != 413 || !answer.contains("body_too_large") {
        failures.push(format!("chunked oversize: got {status} {answer}"));
    }

    // The key server failing is the service's problem, not the caller's: 503, retry later.
    world.keys.add_key("install-key-fresh", INSTALL_PUB_1);
    world.keys.set_failing(true);
    let newcomer = Tenant::new("newcomer");
    let unavailable = ingest
        .send(
            &Raw::post(
                "/lifecycle/installed",
                &newcomer.lifecycle_body("installed"),
            )
            .token(&install_token(
                &newcomer.client_key,
                "/lifecycle/installed",
                APP_BASE_URL,
                "install-key-fresh",
                INSTALL_KEY_1,
            )),
        )
        .await;
    let retry_after = unavailable
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = unavailable.status().as_u16();
    let code = unavailable.code();
    if (status, code.as_str(), retry_after.as_deref())
        != (503, "key_unavailable", Some(RETRY_AFTER_SECONDS))
    {
        failures.push(format!(
            "key server down: got {status} {code} {retry_after:?}"
        ));
    }
    world.keys.set_failing(false);
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Nothing refused was published: no webhook at all, and only the set-up callbacks.
    assert!(world.records(EVENTS_TOPIC).await.is_empty());
    assert_eq!(world.records(LIFECYCLE_TOPIC).await.len(), 3);
    // The refused installs changed nothing: the known tenant's secret still works.
    let still = ingest
        .webhook(&known, "page_created", &page_event("still"))
        .await;
    assert_eq!(still.status(), 204);

    let metrics = ingest.metrics().await;
    for reason in [
        "bad_signature",
        "wrong_audience",
        "body_too_large",
        "key_unavailable",
    ] {
        let line = format!("tributary_ingest_rejected_total{{reason=\"{reason}\"}}");
        assert!(metrics.contains(&line), "metrics lack {line}");
    }
    ingest.stop().await.expect("clean stop");
}

/// Sends `body` with `Transfer-Encoding: chunked` over a plain socket (no declared length)
/// and returns the status and whatever of the answer arrived.
async fn post_chunked(
    addr: std::net::SocketAddr,
    target: &str,
    token: &str,
    body: &[u8],
) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Authorization: JWT {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut wire = head.into_bytes();
    for chunk in body.chunks(8 * 1024) {
        wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before taking everything; a failed write is expected.
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&wire).await;
        let _ = writer.shutdown().await;
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buffer[..n]);
                    if answer.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    writing.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if read.is_err() {
        return (0, format!("no complete answer: {text}"));
    }
    (status, text)
}

/// A subscribed event has a route of its own besides the parameter route: both give every
/// request the same answer. `page%5Fcreated` is `page_created` to the parameter route (it
/// percent-decodes) and matches no route of its own, so it takes the general way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_route_answers_as_the_parameter_route() {
    let world = world().await;
    let ingest = world.ingest(&[]).await;
    let known = Tenant::new("known");
    assert_eq!(ingest.install(&known).await.status(), 204);
    let body = page_event("either-route");
    let answers = |target: &'static str| {
        let request = || Raw::post_bytes(target, body.clone());
        vec![
            ("signed", request().token(&known.token(target))),
            ("no token", request()),
            (
                "wrong secret",
                request().token(&known.rotated().token(target)),
            ),
            (
                "qsh of another event",
                request().token(&known.token("/webhooks/page_updated")),
            ),
            (
                "not JSON",
                request()
                    .token(&known.token(target))
                    .clone_with_body(b"page_created!".to_vec()),
            ),
            (
                "wrong content type",
                request()
                    .token(&known.token(target))
                    .header("content-type", "text/plain"),
            ),
        ]
    };
    let mut seen = Vec::new();
    for target in [HOOK, "/webhooks/page%5Fcreated"] {
        let mut answered = Vec::new();
        for (name, request) in answers(target) {
            let response = ingest.send(&request).await;
            answered.push((name, response.status().as_u16(), response.code()));
        }
        seen.push(answered);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!((seen[0][0].1, seen[0][1].1), (204, 401));
    let records = world.records(EVENTS_TOPIC).await;
    assert_eq!(records.len(), 2);
    for record in &records {
        assert_eq!(
            header(record, "ce_type").as_deref(),
            Some("com.atlassian.confluence.page_created")
        );
    }
    ingest.stop().await.expect("clean stop");
}
