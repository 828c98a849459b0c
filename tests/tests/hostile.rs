//! The hostile corpus (`tests/corpus/hostile.json`) against the real ingest binary: every
//! case gets its documented answer, nothing reaches the topic, and the ingest's memory stays
//! flat while the corpus is sent again and again.

use std::collections::{BTreeSet, HashMap};

use tributary_devkit::harness::Tenant;
use tributary_tests::corpus::{Cast, Corpus};
use tributary_tests::world::{self, EVENTS_TOPIC};

/// Every kind of hostile input the corpus must cover.
const KINDS: &[&str] = &[
    "forged",
    "expired",
    "alg_none",
    "alg_confusion",
    "qsh_other_path",
    "replayed_install",
    "foreign_aud",
    "kid_path",
    "oversize",
    "deep_json",
    "invalid_utf8",
    "content_type",
    "unknown_event",
    "uninstalled",
    "huge_headers",
    "slow_loris",
    // One for each finding of the edge hardening.
    "lifecycle_body",
    "slow_headers",
    "control_characters",
    "cheap_claims_first",
    "legacy_install",
    "base_url",
    "canonical_order",
    "lifecycle_order",
];

/// Rounds of the whole corpus after the first, for the memory reading.
const REPEATS: usize = 4;
/// Growth of the ingest's resident memory over the repeated rounds that counts as a leak.
const RSS_GROWTH_LIMIT_KIB: u64 = 48 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_hostile_request_gets_its_documented_answer_and_nothing_is_published() {
    let corpus = Corpus::load();
    assert!(corpus.cases.len() >= 60, "the corpus has at least 60 cases");
    let kinds: BTreeSet<&str> = corpus.cases.iter().map(|c| c.kind.as_str()).collect();
    for kind in KINDS {
        assert!(kinds.contains(kind), "the corpus has no `{kind}` case");
    }

    let world = world::start(2).await;
    let ingest = world.ingest(&[]).await;
    let site = world.confluence.base_url();
    let cast = Cast {
        tenants: HashMap::from([
            ("known", Tenant::on_site("known", &site)),
            ("other", Tenant::on_site("other", &site)),
            ("gone", Tenant::on_site("gone", &site)),
            ("stranger", Tenant::on_site("stranger", &site)),
            ("newcomer", Tenant::on_site("newcomer", &site)),
        ]),
    };
    for name in ["known", "other", "gone"] {
        let answer = ingest.install(&cast.tenants[name]).await;
        assert_eq!(answer.status(), 204, "install {name}: {}", answer.text());
    }
    let uninstalled = ingest.uninstall(&cast.tenants["gone"]).await;
    assert_eq!(
        uninstalled.status(),
        204,
        "uninstall: {}",
        uninstalled.text()
    );
    let set_up = world.records(EVENTS_TOPIC).await.len();
    assert_eq!(set_up, 4, "three installs and an uninstall were published");

    let mut failures = Vec::new();
    for case in &corpus.cases {
        let outcome = case.run(&ingest, &cast).await;
        if !case.matches(&outcome) {
            failures.push(format!(
                "{} ({}): expected {:?}, got {outcome:?}",
                case.name, case.kind, case.expect
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases got another answer:\n{}\n--- ingest log ---\n{}",
        failures.len(),
        corpus.cases.len(),
        failures.join("\n"),
        ingest.log_tail(30)
    );

    // The same corpus again, several times over: the ingest must not keep any of it.
    let rss_before = ingest.rss_kib().expect("ingest memory");
    for _ in 0..REPEATS {
        for case in corpus
            .cases
            .iter()
            .filter(|c| c.slow_body.is_none() && c.slow_head.is_none())
        {
            case.run(&ingest, &cast).await;
        }
    }
    let rss_after = ingest.rss_kib().expect("ingest memory");

    assert_eq!(
        world.records(EVENTS_TOPIC).await.len(),
        set_up,
        "a refused request reached the topic"
    );
    let known = &cast.tenants["known"];
    let still = ingest
        .webhook(known, "page_created", &known.page_event(1))
        .await;
    assert_eq!(
        still.status(),
        204,
        "the known tenant is untouched: {}",
        still.text()
    );
    let metrics = ingest.metrics().await;
    for code in [
        "bad_signature",
        "unsupported_alg",
        "invalid_kid",
        "body_too_large",
    ] {
        let line = format!("tributary_ingest_rejected_total{{reason=\"{code}\"}}");
        assert!(metrics.contains(&line), "metrics lack {line}");
    }
    println!(
        "hostile corpus: {} cases of {} kinds, {} requests in all; ingest RSS {} KiB -> {} KiB",
        corpus.cases.len(),
        kinds.len(),
        corpus.cases.len() * (REPEATS + 1),
        rss_before,
        rss_after
    );
    assert!(
        rss_after <= rss_before + RSS_GROWTH_LIMIT_KIB,
        "the ingest grew from {rss_before} KiB to {rss_after} KiB over {REPEATS} rounds"
    );
}

/// Slow and idle connections and unsigned 1 MiB lifecycle bodies, all at once, while a
/// tenant keeps sending webhooks: every webhook is accepted, and the ingest's memory is
/// printed (it is expected to stay under 64 MiB; a figure, not an assertion).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_slow_idle_and_unsigned_lifecycle_attack_webhooks_keep_flowing() {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt;
    const SLOW: usize = 100;
    const IDLE: usize = 100;
    const BODIES: usize = 50;
    const MIB: usize = 1024 * 1024;

    let world = world::start(2).await;
    let ingest = world.ingest(&[]).await;
    let site = world.confluence.base_url();
    let tenant = Tenant::on_site("steady", &site);
    assert_eq!(ingest.install(&tenant).await.status(), 204);
    let rss_start = ingest.rss_kib().unwrap_or_default();
    let addr = ingest.addr;

    let mut attackers = Vec::new();
    for i in 0..SLOW {
        attackers.push(tokio::spawn(async move {
            let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                return;
            };
            let line = format!("POST /webhooks/page_created HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: ");
            if stream.write_all(line.as_bytes()).await.is_err() {
                return;
            }
            while stream.write_all(&[b'a'; 64]).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
            idle.push(stream);
        }
    }
    for _ in 0..BODIES {
        attackers.push(tokio::spawn(async move {
            let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                return;
            };
            let head = "POST /lifecycle/installed HTTP/1.1\r\nHost: x\r\n\
                        Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..(MIB / chunk.len()) {
                let framed =
                    [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                if stream.write_all(&framed).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }

    let started = Instant::now();
    let mut sent = 0;
    let mut rss_peak = rss_start;
    let mut refused = Vec::new();
    while started.elapsed() < Duration::from_secs(8) {
        let answer = ingest
            .webhook(&tenant, "page_created", &tenant.page_event(sent))
            .await;
        if answer.status() != 204 {
            refused.push(format!("{} {}", answer.status(), answer.text()));
        }
        sent += 1;
        rss_peak = rss_peak.max(ingest.rss_kib().unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for attacker in attackers {
        attacker.abort();
    }
    drop(idle);
    let metrics = ingest.metrics().await;
    let cut: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("tributary_ingest_connections_cut_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    println!(
        "attack: {SLOW} slow + {IDLE} idle connections, {BODIES} unsigned 1 MiB lifecycle bodies; \
         {sent} webhooks, {} refused; connections cut {cut}; ingest RSS {rss_start} KiB at the \
         start, {rss_peak} KiB at the peak (expected under {} KiB)",
        refused.len(),
        64 * 1024
    );
    assert!(
        refused.is_empty(),
        "webhooks refused under attack: {refused:?}"
    );
    assert!(sent > 10, "webhooks kept being sent");
}
