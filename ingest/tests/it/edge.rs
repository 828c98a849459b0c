//! Edge hardening: base URLs checked and normalised, lifecycle events sourced from the
//! stored tenant, and what a stranger's requests may cost.

use serde_json::json;
use tributary_common::store::TenantStore;
use tributary_devkit::test_keyring;
use tributary_devkit::{INSTALL_KEY_1, Token};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn base_urls_are_normalised_and_every_lifecycle_event_carries_the_stored_one() {
    let world = world().await;
    let ingest = world.ingest(&[]).await;
    let tenant = Tenant::on_site("norm", "https://Norm-Site.Atlassian.NET.:443/wiki/");
    let installed = ingest.install(&tenant).await;
    assert_eq!(installed.status(), 204, "{}", installed.text());
    let store = TenantStore::new(world.pool().await, test_keyring());
    let stored = store
        .get(&tenant.client_key)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(stored.base_url, "https://norm-site.atlassian.net/wiki");

    // The body of a later callback says the site lives elsewhere; the events do not.
    for kind in ["enabled", "disabled"] {
        let mut body = tenant.lifecycle_body(kind);
        body["baseUrl"] = json!("https://evil.example/wiki");
        let target = format!("/lifecycle/{kind}");
        let answer = ingest
            .send(&Raw::post(&target, &body).token(&tenant.token(&target)))
            .await;
        assert_eq!(answer.status(), 204, "{kind}: {}", answer.text());
    }
    let mut uninstall = tenant.uninstall_request();
    let mut body: serde_json::Value = serde_json::from_slice(&uninstall.body).expect("json");
    body["baseUrl"] = json!("https://evil.example/wiki");
    uninstall.body = serde_json::to_vec(&body).expect("json");
    assert_eq!(ingest.send(&uninstall).await.status(), 204);

    let records = world.records(LIFECYCLE_TOPIC).await;
    assert_eq!(records.len(), 4);
    for record in &records {
        assert_eq!(
            header(record, "ce_source").as_deref(),
            Some("https://norm-site.atlassian.net/wiki"),
            "{:?}",
            header(record, "ce_type")
        );
    }
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn base_urls_that_could_point_elsewhere_are_refused_and_not_stored() {
    let world = world().await;
    let ingest = world.ingest(&[]).await;
    let store = TenantStore::new(world.pool().await, test_keyring());
    for base_url in [
        "https://evil.example@x.atlassian.net",
        "https://x.atlassian.net:22",
        "http://x.atlassian.net",
        "https://x.atlassian.net\\@evil.example/wiki",
        "https://x.atlassian.net/wiki?x=1",
        "https://x.atlassian.net.evil.example/wiki",
    ] {
        let tenant = Tenant::on_site("url", base_url);
        let answer = ingest.install(&tenant).await;
        assert_eq!(
            (answer.status().as_u16(), answer.code().as_str()),
            (403, "host_not_allowed"),
            "{base_url}"
        );
        assert!(
            store.get(&tenant.client_key).await.expect("read").is_none(),
            "{base_url} was stored"
        );
    }
    assert!(world.records(LIFECYCLE_TOPIC).await.is_empty());
    ingest.stop().await.expect("clean stop");
}

/// The value of a counter sample (every series whose line starts with `series`, summed).
fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(series))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_unsigned_installs_in_legacy_mode_have_exactly_one_winner() {
    let world = world().await;
    let ingest = world
        .ingest(&[("TRIBUTARY_INGEST_ALLOW_LEGACY_INSTALLS", "true")])
        .await;
    let first = Tenant::new("contested");
    let rivals: Vec<Tenant> = (0..8).map(|_| first.rotated()).collect();
    let requests: Vec<Raw> = rivals
        .iter()
        .map(|rival| Raw::post("/lifecycle/installed", &rival.lifecycle_body("installed")))
        .collect();
    let answers = futures::future::join_all(requests.iter().map(|r| ingest.send(r))).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status().as_u16()).collect();
    let winners: Vec<&Tenant> = rivals
        .iter()
        .zip(&statuses)
        .filter(|(_, status)| **status == 204)
        .map(|(rival, _)| rival)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one unsigned install wins: {statuses:?}"
    );
    for answer in answers.iter().filter(|a| a.status() != 204) {
        assert_eq!(
            (answer.status().as_u16(), answer.code().as_str()),
            (401, "missing_token")
        );
    }
    // The winner's secret is the one stored: its webhooks pass, every other rival's fail.
    let winner = winners[0];
    let accepted = ingest
        .webhook(winner, "page_created", &page_event("winner"))
        .await;
    assert_eq!(accepted.status(), 204, "{}", accepted.text());
    for rival in rivals.iter().filter(|r| r.secret != winner.secret) {
        let refused = ingest
            .webhook(rival, "page_created", &page_event("loser"))
            .await;
        assert_eq!(refused.status(), 401);
    }
    assert_eq!(world.records(LIFECYCLE_TOPIC).await.len(), 1);
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_requests_cost_a_bounded_number_of_database_reads_and_key_fetches() {
    const READS: &str = "tributary_ingest_tenant_reads_total";
    const FORGED: usize = 20;
    let world = world().await;
    let ingest = world.ingest(&[]).await;
    let known = Tenant::new("known");
    assert_eq!(ingest.install(&known).await.status(), 204);
    let hook = "/webhooks/page_created";
    let send_hook = |token: String| {
        let ingest = &ingest;
        async move {
            ingest
                .send(&Raw::post_bytes(hook, page_event("forged")).token(&token))
                .await
        }
    };
    // One webhook warms the cache with the known tenant.
    assert_eq!(
        ingest
            .webhook(&known, "page_created", &page_event("warm"))
            .await
            .status(),
        204
    );
    let reads_before = counter(&ingest.metrics().await, READS);

    // A made-up issuer, again and again: one read, then remembered.
    let stranger = Tenant::new("stranger");
    for _ in 0..FORGED {
        let answer = send_hook(stranger.token(hook)).await;
        assert_eq!(answer.code(), "unknown_issuer");
    }
    let after_unknown = counter(&ingest.metrics().await, READS);
    assert!(
        after_unknown - reads_before <= 1.0,
        "{FORGED} forged issuers cost {} reads",
        after_unknown - reads_before
    );

    // Bad signatures for the cached tenant: at most one re-read per interval.
    for _ in 0..FORGED {
        let answer = send_hook(known.rotated().token(hook)).await;
        assert_eq!(answer.code(), "bad_signature");
    }
    let after_forged = counter(&ingest.metrics().await, READS);
    assert!(
        after_forged - after_unknown <= 2.0,
        "{FORGED} bad signatures cost {} reads",
        after_forged - after_unknown
    );
    println!(
        "database reads: {FORGED} unknown issuers -> {}, {FORGED} bad signatures -> {}",
        after_unknown - reads_before,
        after_forged - after_unknown
    );

    // Installs: a token that fails a claim check fetches no key; an unknown kid is fetched
    // once however often it is sent.
    let newcomer = Tenant::new("newcomer");
    let install = |token: String| {
        Raw::post(
            "/lifecycle/installed",
            &newcomer.lifecycle_body("installed"),
        )
        .token(&token)
    };
    let hits_before = world.keys.hits();
    for i in 0..10 {
        let token = install_token(
            &newcomer.client_key,
            "/lifecycle/installed",
            "https://other-app.example.com",
            &format!("random-kid-{i}"),
            INSTALL_KEY_1,
        );
        assert_eq!(ingest.send(&install(token)).await.code(), "wrong_audience");
    }
    assert_eq!(
        world.keys.hits(),
        hits_before,
        "no fetch for a foreign audience"
    );
    for _ in 0..10 {
        let token = install_token(
            &newcomer.client_key,
            "/lifecycle/installed",
            APP_BASE_URL,
            "made-up-kid",
            INSTALL_KEY_1,
        );
        assert_eq!(ingest.send(&install(token)).await.code(), "unknown_kid");
    }
    assert_eq!(
        world.keys.hits() - hits_before,
        1,
        "one fetch for ten installs with one unknown kid"
    );
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_signed_in_either_canonical_order_are_accepted() {
    use tributary_common::connect::{CanonicalForm, CanonicalRequest};
    let world = world().await;
    let ingest = world.ingest(&[]).await;
    let tenant = Tenant::new("orders");
    assert_eq!(ingest.install(&tenant).await.status(), 204);
    for target in [
        // A repeated parameter whose values are not in sorted order.
        "/webhooks/page_created?label=zeta&label=alpha&spaceKey=DEV",
        // A name that is not ASCII.
        "/webhooks/page_created?z=1&%C3%A9t%C3%A9=2",
    ] {
        for form in [CanonicalForm::Java, CanonicalForm::JavaScript] {
            let qsh = CanonicalRequest::in_form(form, "POST", target, "").qsh;
            let token = Token::from_confluence(&tenant.client_key)
                .for_request("POST", target)
                .claim("qsh", qsh)
                .hs256(&tenant.secret)
                .expect("sign");
            let answer = ingest
                .send(&Raw::post_bytes(target, page_event("ordered")).token(&token))
                .await;
            assert_eq!(
                answer.status(),
                204,
                "{target} signed {form:?}: {}",
                answer.text()
            );
        }
    }
    let forged = Token::from_confluence(&tenant.client_key)
        .for_request("POST", "/webhooks/page_created?label=a")
        .hs256(&tenant.secret)
        .expect("sign");
    let refused = ingest
        .send(&Raw::post_bytes("/webhooks/page_created?label=b", page_event("x")).token(&forged))
        .await;
    assert_eq!(refused.code(), "qsh_mismatch");
    ingest.stop().await.expect("clean stop");
}

/// True once the server closed `stream` (read returns 0 or an error) within `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // An answer (408 or the like) before the close is fine.
            Ok(Ok(_)) => continue,
        }
    }
}

// The idle cut counts silence between requests only: hyper keeps reading while a request
// is answered, and an answer slower than the idle timeout (here a slow broker) must not be
// cut, or a webhook that reached the broker would look failed to its sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_slower_than_the_idle_timeout_is_not_cut() {
    use std::time::Duration;
    if skip_without_fault_injection("an_answer_slower_than_the_idle_timeout_is_not_cut") {
        return;
    }
    let world = world().await;
    let ingest = world
        .ingest(&[
            ("TRIBUTARY_INGEST_IDLE_TIMEOUT_SECONDS", "1"),
            ("TRIBUTARY_INGEST_PUBLISH_TIMEOUT_MS", "10000"),
        ])
        .await;
    let tenant = Tenant::new("slow-broker");
    assert_eq!(ingest.install(&tenant).await.status(), 204);
    world.broker_round_trip(Duration::from_millis(1300)).await;
    let answer = ingest
        .webhook(&tenant, "page_created", &page_event("slow"))
        .await;
    assert_eq!(answer.status(), 204, "{}", answer.text());
    world.broker_round_trip(Duration::ZERO).await;
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_headers_and_idle_connections_are_cut_and_counted() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    let world = world().await;
    let ingest = world
        .ingest(&[
            // Idle connections are cut before their headers are late; a client trickling
            // its headers is never idle, and is cut by the header timeout.
            ("TRIBUTARY_INGEST_HEADER_READ_TIMEOUT_MS", "2500"),
            ("TRIBUTARY_INGEST_IDLE_TIMEOUT_SECONDS", "1"),
        ])
        .await;
    let tenant = Tenant::new("patient");
    assert_eq!(ingest.install(&tenant).await.status(), 204);

    // Headers trickled a byte at a time, never finished.
    let mut slow = tokio::net::TcpStream::connect(ingest.addr)
        .await
        .expect("connect");
    let trickle = tokio::spawn(async move {
        let head = b"POST /webhooks/page_created HTTP/1.1\r\nHost: x\r\nX-Padding: ";
        let _ = slow.write_all(head).await;
        for _ in 0..60 {
            if slow.write_all(b"a").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slow
    });
    // A connection that never sends anything, and one idle after a request.
    let mut silent = tokio::net::TcpStream::connect(ingest.addr)
        .await
        .expect("connect");
    let mut kept_alive = tokio::net::TcpStream::connect(ingest.addr)
        .await
        .expect("connect");
    kept_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");

    assert!(
        closed_within(&mut silent, Duration::from_secs(6)).await,
        "a silent connection is closed"
    );
    assert!(
        closed_within(&mut kept_alive, Duration::from_secs(6)).await,
        "an idle keep-alive connection is closed"
    );
    let mut slow = trickle.await.expect("trickle");
    assert!(
        closed_within(&mut slow, Duration::from_secs(4)).await,
        "slow headers are cut"
    );

    // Clients that behave are served all along.
    let accepted = ingest
        .webhook(&tenant, "page_created", &page_event("meanwhile"))
        .await;
    assert_eq!(accepted.status(), 204);
    let metrics = ingest.metrics().await;
    let cut = |reason: &str| {
        counter(
            &metrics,
            &format!("tributary_ingest_connections_cut_total{{reason=\"{reason}\"}}"),
        )
    };
    assert!(cut("header_timeout") >= 1.0, "{metrics}");
    assert!(cut("idle") >= 1.0, "{metrics}");
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsigned_lifecycle_bodies_cannot_starve_webhooks() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    let world = world().await;
    // Legacy installs on: the one case where a lifecycle body must be read unsigned.
    let ingest = world
        .ingest(&[
            ("TRIBUTARY_INGEST_ALLOW_LEGACY_INSTALLS", "true"),
            ("TRIBUTARY_INGEST_MAX_IN_FLIGHT", "8"),
            ("TRIBUTARY_INGEST_LIFECYCLE_MAX_IN_FLIGHT", "4"),
        ])
        .await;
    let tenant = Tenant::new("steady");
    assert_eq!(ingest.install(&tenant).await.status(), 204);

    // Sixteen unsigned installs, their bodies trickled a byte a second.
    let mut holders = Vec::new();
    for i in 0..16 {
        let addr = ingest.addr;
        holders.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let head = format!(
                "POST /lifecycle/installed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: 4000\r\nX-Holder: {i}\r\n\r\n{{"
            );
            let _ = stream.write_all(head.as_bytes()).await;
            for _ in 0..8 {
                if stream.write_all(b" ").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..10 {
        let answer = ingest
            .webhook(
                &tenant,
                "page_created",
                &page_event(&format!("through-{i}")),
            )
            .await;
        assert_eq!(answer.status(), 204, "webhook {i}: {}", answer.text());
    }
    // The lifecycle pool is full: a further lifecycle callback is told to come back.
    let busy = ingest.notify(&tenant, "enabled").await;
    assert_eq!(
        (busy.status().as_u16(), busy.code().as_str()),
        (503, "overloaded")
    );

    for holder in holders {
        holder.abort();
    }
    // Once the holders are gone, an unsigned body of 1 MiB is refused before it is read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let big = Raw::post_bytes("/lifecycle/installed", vec![b' '; 1024 * 1024]);
    let refused = ingest.send(&big).await;
    assert_eq!(
        (refused.status().as_u16(), refused.code().as_str()),
        (413, "body_too_large")
    );
    ingest.stop().await.expect("clean stop");
}

/// The answer on `stream` (head and `Content-Length` body), if a whole one arrives within
/// `within`.
async fn answer_within(
    stream: &mut tokio::net::TcpStream,
    within: std::time::Duration,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + within;
    let mut read = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&read).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let declared = text[..end]
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, value)| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if read.len() >= end + 4 + declared {
                return Some(text);
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => read.extend_from_slice(&buffer[..n]),
            _ => return None,
        }
    }
}

/// The `error` code in the JSON body of a raw answer.
fn raw_code(answer: &str) -> String {
    answer
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(body).ok())
        .and_then(|body| body["error"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_past_the_cap_wait_until_one_closes_and_the_gauge_counts_them() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    const OPEN: &str = "tributary_ingest_open_connections";
    const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let world = world().await;
    // Nothing else talks to this ingest (its pooled client would hold a slot); the
    // metrics are served on a listener of their own, outside the cap.
    let ingest = world
        .ingest(&[("TRIBUTARY_INGEST_MAX_CONNECTIONS", "2")])
        .await;
    let open = || async { counter(&ingest.metrics().await, OPEN) };

    let mut held = Vec::new();
    for i in 0..2 {
        let mut stream = TcpStream::connect(ingest.addr).await.expect("connect");
        stream.write_all(HEALTH).await.expect("request");
        let answer = answer_within(&mut stream, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("connection {i} within the cap is served"));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        held.push(stream);
    }
    assert_eq!(open().await, 2.0, "two kept-alive connections are open");

    // The kernel completes the handshake, but the server does not take the connection
    // from the backlog while the cap is reached: the request waits, unanswered.
    let mut waiting = TcpStream::connect(ingest.addr).await.expect("connect");
    waiting.write_all(HEALTH).await.expect("request");
    assert!(
        answer_within(&mut waiting, Duration::from_secs(1))
            .await
            .is_none(),
        "a connection past the cap is not served"
    );
    assert_eq!(open().await, 2.0, "the waiting connection is not counted");

    // One closes: the waiting connection takes its slot and its request is answered.
    drop(held.pop());
    let answer = answer_within(&mut waiting, Duration::from_secs(10))
        .await
        .expect("served once a connection closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A closed connection gives its gauge count back before its slot.
    assert_eq!(open().await, 2.0, "one held and the one that waited");

    drop(held);
    drop(waiting);
    let mut last = open().await;
    for _ in 0..100 {
        if last == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = open().await;
    }
    assert_eq!(last, 0.0, "closed connections leave the gauge");
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_callbacks_without_a_valid_token_are_refused_before_any_body_byte() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tributary_devkit::INSTALL_KEY_2;
    // A lifecycle limit as large as the global one, so the declared length alone (1 MB) is
    // no reason to refuse: only the token is.
    let world = world().await;
    let ingest = world
        .ingest(&[("TRIBUTARY_INGEST_LIFECYCLE_MAX_BODY_BYTES", "1048576")])
        .await;
    let stranger = Tenant::new("headers-only");
    let cases: Vec<(&str, &str, Option<String>, u16, &str)> = vec![
        (
            "installed, no token",
            "installed",
            None,
            401,
            "missing_token",
        ),
        (
            "installed, signed with a key that is not Atlassian's",
            "installed",
            Some(install_token(
                &stranger.client_key,
                "/lifecycle/installed",
                APP_BASE_URL,
                KID,
                INSTALL_KEY_2,
            )),
            401,
            "bad_signature",
        ),
        (
            "installed, HS256 from a made-up tenant",
            "installed",
            Some(stranger.token("/lifecycle/installed")),
            401,
            "unsupported_alg",
        ),
        ("enabled, no token", "enabled", None, 401, "missing_token"),
        (
            "enabled, HS256 from a made-up tenant",
            "enabled",
            Some(stranger.token("/lifecycle/enabled")),
            401,
            "unknown_issuer",
        ),
    ];
    for (name, kind, token, status, code) in cases {
        let mut stream = tokio::net::TcpStream::connect(ingest.addr)
            .await
            .expect("connect");
        let authorization = token
            .map(|t| format!("Authorization: JWT {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "POST /lifecycle/{kind} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 1000000\r\n{authorization}\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        // Not one body byte is sent: an answer at all shows the body was never waited for.
        let answer = answer_within(&mut stream, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{name}: no answer without the body"));
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{name}: {answer}"
        );
        assert_eq!(raw_code(&answer), code, "{name}: {answer}");
    }
    let store = TenantStore::new(world.pool().await, test_keyring());
    assert!(
        store
            .get(&stranger.client_key)
            .await
            .expect("read")
            .is_none()
    );
    assert!(world.records(LIFECYCLE_TOPIC).await.is_empty());
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn install_tokens_failing_a_claim_check_are_refused_before_any_key_fetch() {
    use tributary_common::connect::token::now_unix;
    let world = world().await;
    let ingest = world.ingest(&[]).await;
    // A real install first, so the world's key is known and fetched no more.
    let warm = Tenant::new("warm");
    assert_eq!(ingest.install(&warm).await.status(), 204);
    let hits_before = world.keys.hits();

    let newcomer = Tenant::new("claims");
    let target = "/lifecycle/installed";
    let body = newcomer.lifecycle_body("installed");
    let signed = |token: Token, kid: &str| {
        token
            .for_request("POST", target)
            .rs256(kid, INSTALL_KEY_1)
            .expect("sign")
    };
    let now = now_unix();
    let fresh = |i: usize| format!("never-fetched-{i}-{}", uuid::Uuid::new_v4().simple());
    // Each token names a kid nobody fetched yet, so any fetch would show at the key server.
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "expired an hour ago",
            signed(
                Token::signed_install(&newcomer.client_key, APP_BASE_URL).issued_at(now - 3600),
                &fresh(0),
            ),
            401,
            "expired",
        ),
        (
            "issued an hour from now",
            signed(
                Token::signed_install(&newcomer.client_key, APP_BASE_URL).issued_at(now + 3600),
                &fresh(1),
            ),
            401,
            "issued_in_future",
        ),
        (
            "iss with a NUL",
            signed(
                Token::signed_install(&newcomer.client_key, APP_BASE_URL)
                    .claim("iss", format!("{}\u{0}", newcomer.client_key)),
                &fresh(2),
            ),
            400,
            "malformed",
        ),
        (
            "iss of 4 KiB",
            signed(
                Token::signed_install(&newcomer.client_key, APP_BASE_URL)
                    .claim("iss", "k".repeat(4096)),
                &fresh(3),
            ),
            400,
            "malformed",
        ),
        (
            "empty iss",
            signed(
                Token::signed_install(&newcomer.client_key, APP_BASE_URL).claim("iss", ""),
                &fresh(4),
            ),
            400,
            "malformed",
        ),
        (
            "no iss",
            signed(
                Token::signed_install(&newcomer.client_key, APP_BASE_URL).without("iss"),
                &fresh(5),
            ),
            400,
            "malformed",
        ),
        (
            "iss not a string",
            signed(
                Token::signed_install(&newcomer.client_key, APP_BASE_URL).claim("iss", 42),
                &fresh(6),
            ),
            400,
            "malformed",
        ),
    ];
    for (name, token, status, code) in cases {
        let answer = ingest.send(&Raw::post(target, &body).token(&token)).await;
        assert_eq!(
            (answer.status().as_u16(), answer.code().as_str()),
            (status, code),
            "{name}: {}",
            answer.text()
        );
    }
    assert_eq!(
        world.keys.hits(),
        hits_before,
        "no key fetch for a token failing a claim check"
    );

    // An iss that is not the body's clientKey: the body is read only once the token is
    // verified, so this comparison comes after the key; a known kid costs no fetch.
    let impostor = install_token(
        &format!("{}-other", newcomer.client_key),
        target,
        APP_BASE_URL,
        KID,
        INSTALL_KEY_1,
    );
    let answer = ingest
        .send(&Raw::post(target, &body).token(&impostor))
        .await;
    assert_eq!(
        (answer.status().as_u16(), answer.code().as_str()),
        (401, "issuer_mismatch"),
        "{}",
        answer.text()
    );
    assert_eq!(world.keys.hits(), hits_before);

    let store = TenantStore::new(world.pool().await, test_keyring());
    assert!(
        store
            .get(&newcomer.client_key)
            .await
            .expect("read")
            .is_none()
    );
    assert_eq!(
        world.records(LIFECYCLE_TOPIC).await.len(),
        1,
        "the warm-up only"
    );
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_issuer_remembered_as_unknown_is_forgotten_once_it_installs_on_every_replica() {
    // A long negative cache, so expiry cannot explain anything below.
    let long_ttl = [("TRIBUTARY_INGEST_NEGATIVE_CACHE_TTL_SECONDS", "3600")];
    let world = world().await;
    let first = world.ingest(&long_ttl).await;
    let second = world.ingest(&long_ttl).await;
    let newcomer = Tenant::new("late-comer");
    for ingest in [&first, &second] {
        for _ in 0..3 {
            let refused = ingest
                .webhook(&newcomer, "page_created", &page_event("early"))
                .await;
            assert_eq!(refused.code(), "unknown_issuer");
        }
    }

    assert_eq!(first.install(&newcomer).await.status(), 204);
    let accepted = first
        .webhook(&newcomer, "page_created", &page_event("installed-here"))
        .await;
    assert_eq!(
        accepted.status(),
        204,
        "the installing replica forgets at once: {}",
        accepted.text()
    );
    // The other replica hears of the install through the change feed, asynchronously; a
    // bounded wait keeps the test honest on a loaded machine.
    let mut refused_by_second = 0;
    let mut accepted_by_second = false;
    for _ in 0..100 {
        let answer = second
            .webhook(
                &newcomer,
                "page_created",
                &page_event("installed-elsewhere"),
            )
            .await;
        if answer.status() == 204 {
            accepted_by_second = true;
            break;
        }
        assert_eq!(answer.code(), "unknown_issuer");
        refused_by_second += 1;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        accepted_by_second,
        "the other replica forgets the unknown issuer too"
    );
    println!("webhooks refused by the other replica after the install: {refused_by_second}");
    let bodies: Vec<String> = world
        .records(EVENTS_TOPIC)
        .await
        .iter()
        .map(payload_text)
        .collect();
    assert!(!bodies.iter().any(|b| b.contains("\"early\"")));
    assert_eq!(
        bodies
            .iter()
            .filter(|b| b.contains("installed-here"))
            .count(),
        1
    );
    first.stop().await.expect("clean stop");
    second.stop().await.expect("clean stop");
}
