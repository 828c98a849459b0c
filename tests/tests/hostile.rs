//! The hostile corpus (`tests/corpus/hostile.json`) against the real ingest binary: every
//! case gets its documented answer, nothing reaches the topic, and the ingest's memory stays
//! flat while the corpus is sent again and again.

use std::collections::{BTreeSet, HashMap};

use tributary_common::connect::LifecycleEventType;
use tributary_common::envelope::{EventKind, header};
use tributary_common::store::{LifecycleStamp, TenantStore};
use tributary_devkit::harness::{Tenant, World};
use tributary_devkit::kafka::header_text;
use tributary_devkit::test_keyring;
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

/// Applies the lifecycle events of `tenant` on the events topic again, newest first (and
/// its uninstalls after everything else when `uninstalls_last`), as the processors'
/// tenant-state handler does, each with its own time and id: what a processor lagging
/// behind the ingest, or reading uninstalls from a topic of their own, does at worst. The
/// ingest is then told the tenant changed, so it reads it again. Returns how many events
/// were applied.
async fn replay_lifecycle(world: &World, tenant: &Tenant, uninstalls_last: bool) -> usize {
    let store = TenantStore::new(world.pool().await, test_keyring());
    let mut events = Vec::new();
    for record in world.records(EVENTS_TOPIC).await.iter().rev() {
        let text = |name: &str| header_text(record, name).unwrap_or_default();
        if text(header::CLIENT_KEY) != tenant.client_key {
            continue;
        }
        let Some(EventKind::Lifecycle(kind)) = EventKind::from_ce_type(&text(header::TYPE)) else {
            continue;
        };
        let time = chrono::DateTime::parse_from_rfc3339(&text(header::TIME))
            .expect("an RFC 3339 ce_time")
            .with_timezone(&chrono::Utc);
        events.push((kind, LifecycleStamp::new(time, &text(header::ID))));
    }
    if uninstalls_last {
        events.sort_by_key(|(kind, _)| *kind == LifecycleEventType::Uninstalled);
    }
    for (kind, stamp) in &events {
        store
            .apply_lifecycle_at(&tenant.client_key, *kind, stamp)
            .await
            .expect("replayed");
    }
    store
        .announce_change(&tenant.client_key)
        .await
        .expect("announced");
    events.len()
}

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
    // Legacy installs change what an unsigned or HS256 install means, so the cases about
    // them go to an ingest of their own.
    let legacy = world
        .ingest(&[("TRIBUTARY_INGEST_ALLOW_LEGACY_INSTALLS", "true")])
        .await;
    let site = world.confluence.base_url();
    let cast = Cast {
        tenants: HashMap::from([
            ("known", Tenant::on_site("known", &site)),
            ("other", Tenant::on_site("other", &site)),
            ("gone", Tenant::on_site("gone", &site)),
            ("stranger", Tenant::on_site("stranger", &site)),
            ("newcomer", Tenant::on_site("newcomer", &site)),
            ("phoenix", Tenant::on_site("phoenix", &site)),
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
    let phoenix = &cast.tenants["phoenix"];
    for (step, answer) in [
        ingest.install(phoenix).await,
        ingest.notify(phoenix, "enabled").await,
        ingest.uninstall(phoenix).await,
        ingest.install(phoenix).await,
        ingest.notify(phoenix, "enabled").await,
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(
            answer.status(),
            204,
            "phoenix step {step}: {}",
            answer.text()
        );
    }
    let set_up = world.records(EVENTS_TOPIC).await.len();
    assert_eq!(
        set_up, 9,
        "the installs, uninstalls and enables of the set-up were published"
    );
    // Replayed so that the stale event comes last: gone's install, phoenix's uninstall.
    assert_eq!(
        replay_lifecycle(&world, &cast.tenants["gone"], false).await,
        2
    );
    assert_eq!(replay_lifecycle(&world, phoenix, true).await, 5);

    let mut failures = Vec::new();
    for case in &corpus.cases {
        let target = if case.legacy { &legacy } else { &ingest };
        let fetches_before = world.keys.hits();
        let outcomes = case.run_all(target, &cast).await;
        let fetches = world.keys.hits() - fetches_before;
        for outcome in outcomes.iter().filter(|outcome| !case.matches(outcome)) {
            failures.push(format!(
                "{} ({}): expected {:?}, got {outcome:?}",
                case.name, case.kind, case.expect
            ));
        }
        if case
            .expect
            .key_fetches
            .is_some_and(|expected| expected != fetches)
        {
            failures.push(format!(
                "{} ({}): expected {:?} install-key fetches, got {fetches}",
                case.name, case.kind, case.expect.key_fetches
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
    let repeated = || {
        corpus
            .cases
            .iter()
            .filter(|c| c.slow_body.is_none() && c.slow_head.is_none())
    };
    for _ in 0..REPEATS {
        for case in repeated() {
            let target = if case.legacy { &legacy } else { &ingest };
            case.run_all(target, &cast).await;
        }
    }
    let rss_after = ingest.rss_kib().expect("ingest memory");

    // The cases documented as accepted publish an event each time they are sent; nothing
    // else does.
    let accepted = |c: &&tributary_tests::corpus::Case| c.expect.status == Some(204);
    let published = corpus.cases.iter().filter(accepted).count()
        + REPEATS * repeated().filter(accepted).count();
    assert_eq!(
        world.records(EVENTS_TOPIC).await.len(),
        set_up + published,
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
    legacy.stop().await.expect("clean stop");
}

/// Slow and idle connections and unsigned 1 MiB lifecycle bodies, all at once and for the
/// whole window (an attacker whose connection is cut opens another at once), while a tenant
/// keeps sending webhooks: every webhook is accepted, and the ingest's memory is printed
/// every second and at the end (it is expected to stay under 64 MiB; figures, not
/// assertions).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_slow_idle_and_unsigned_lifecycle_attack_webhooks_keep_flowing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SLOW: usize = 100;
    const IDLE: usize = 100;
    const BODIES: usize = 50;
    const MIB: usize = 1024 * 1024;
    // Three times the default header-read timeout (5 s): every slow and idle connection is
    // cut and opened again within it, so the attack never lets up.
    const WINDOW: Duration = Duration::from_secs(16);

    let world = world::start(2).await;
    let ingest = world.ingest(&[]).await;
    let site = world.confluence.base_url();
    let tenant = Tenant::on_site("steady", &site);
    assert_eq!(ingest.install(&tenant).await.status(), 204);
    let rss_start = ingest.rss_kib().unwrap_or_default();
    let addr = ingest.addr;
    let stop = Arc::new(AtomicBool::new(false));
    // Connections opened by the slow, idle and body attackers.
    let opened: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());

    let mut attackers = Vec::new();
    for i in 0..SLOW {
        let (stop, opened) = (stop.clone(), opened.clone());
        attackers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                opened[0].fetch_add(1, Ordering::Relaxed);
                let line =
                    format!("POST /webhooks/page_created HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: ");
                if stream.write_all(line.as_bytes()).await.is_err() {
                    continue;
                }
                while !stop.load(Ordering::Relaxed) && stream.write_all(&[b'a'; 64]).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }));
    }
    for _ in 0..IDLE {
        let (stop, opened) = (stop.clone(), opened.clone());
        attackers.push(tokio::spawn(async move {
            let mut buffer = [0u8; 1024];
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                opened[1].fetch_add(1, Ordering::Relaxed);
                // Silent until the server closes the connection (or the window ends).
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(250), stream.read(&mut buffer))
                        .await
                    {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(_)) | Err(_) => {}
                    }
                }
            }
        }));
    }
    for _ in 0..BODIES {
        let (stop, opened) = (stop.clone(), opened.clone());
        attackers.push(tokio::spawn(async move {
            let chunk = vec![b' '; 64 * 1024];
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                opened[2].fetch_add(1, Ordering::Relaxed);
                let head = "POST /lifecycle/installed HTTP/1.1\r\nHost: x\r\n\
                            Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    continue;
                }
                for _ in 0..(MIB / chunk.len()) {
                    if stop.load(Ordering::Relaxed) || stream.write_all(&framed).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                // A refused body is sent again on a new connection, a moment later.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }

    let started = Instant::now();
    let mut sent = 0;
    let mut rss_peak = rss_start;
    let mut refused = Vec::new();
    let mut next_report = Duration::from_secs(1);
    while started.elapsed() < WINDOW {
        let answer = ingest
            .webhook(&tenant, "page_created", &tenant.page_event(sent))
            .await;
        if answer.status() != 204 {
            refused.push(format!("{} {}", answer.status(), answer.text()));
        }
        sent += 1;
        let rss = ingest.rss_kib().unwrap_or_default();
        rss_peak = rss_peak.max(rss);
        if started.elapsed() >= next_report {
            let open = metric_sum(&ingest.metrics().await, "tributary_ingest_open_connections");
            println!(
                "attack at {:>2} s: ingest RSS {rss} KiB, {open} connections open, opened so far: \
                 {} slow, {} idle, {} lifecycle bodies; {sent} webhooks, {} refused",
                next_report.as_secs(),
                opened[0].load(Ordering::Relaxed),
                opened[1].load(Ordering::Relaxed),
                opened[2].load(Ordering::Relaxed),
                refused.len()
            );
            next_report += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.abort();
    }
    let metrics = ingest.metrics().await;
    let cut = metric_sum(&metrics, "tributary_ingest_connections_cut_total");
    let [slow, idle, bodies] = [0, 1, 2].map(|i| opened[i].load(Ordering::Relaxed));
    println!(
        "attack: {SLOW} slow + {IDLE} idle connections, {BODIES} unsigned 1 MiB lifecycle bodies, \
         kept up for {} s ({slow} slow, {idle} idle and {bodies} body connections opened in all); \
         {sent} webhooks, {} refused; connections cut {cut}; ingest RSS {rss_start} KiB at the \
         start, {rss_peak} KiB at the peak (expected under {} KiB)",
        WINDOW.as_secs(),
        refused.len(),
        64 * 1024
    );
    assert!(
        refused.is_empty(),
        "webhooks refused under attack: {refused:?}"
    );
    assert!(sent > 10, "webhooks kept being sent");
    assert!(
        slow > SLOW && idle > IDLE && bodies > BODIES,
        "cut attackers came back: {slow} slow, {idle} idle, {bodies} body connections opened"
    );
}

/// The sum of every sample whose line starts with `series`.
fn metric_sum(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
