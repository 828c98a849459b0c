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
        for case in corpus.cases.iter().filter(|c| c.slow_body.is_none()) {
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
