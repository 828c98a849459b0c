//! The dashboards against the real thing: the real Prometheus scrapes a running ingest and
//! processor (child processes) while signed traffic, rejections, a broker outage, a
//! dead-lettered event and Confluence calls (rate-limited and failing ones included) go
//! through them; then every panel query of every dashboard must return series.

use std::time::{Duration, Instant};

use tributary_devkit::confluence::{Fault, FaultSpan};
use tributary_devkit::free_port;
use tributary_devkit::harness::{Raw, skip_without_fault_injection};
use tributary_tests::prometheus::Prometheus;
use tributary_tests::world::{self, start_processor};

fn panel_queries() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/dashboards");
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dashboards").flatten() {
        if entry.path().extension().is_none_or(|x| x != "json") {
            continue;
        }
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(entry.path()).expect("read"))
                .expect("json");
        let title = dashboard["title"].as_str().unwrap_or_default().to_string();
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    // Grafana fills in $__rate_interval; a minute covers this test's scrapes.
                    queries.push((
                        format!("{title} / {}", panel["title"].as_str().unwrap_or_default()),
                        expr.replace("$__rate_interval", "1m"),
                    ));
                }
            }
        }
    }
    queries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_series_from_the_running_services() {
    // The 503 panel needs a broker outage.
    if skip_without_fault_injection(
        "every_dashboard_query_returns_series_from_the_running_services",
    ) {
        return;
    }
    let world = world::start(2).await;
    let ingest = world
        .ingest(&[("TRIBUTARY_INGEST_PUBLISH_TIMEOUT_MS", "1000")])
        .await;
    let processor_metrics = format!("127.0.0.1:{}", free_port());
    let mut processor = start_processor(
        &world,
        &[
            ("TRIBUTARY_METRICS_LISTEN", processor_metrics.as_str()),
            ("TRIBUTARY_PROCESSOR_MAX_ATTEMPTS", "3"),
        ],
    );
    let prometheus = Prometheus::start(&[
        (
            "tributary-ingest",
            ingest.metrics_url.trim_start_matches("http://").to_string(),
        ),
        ("tributary-processor", processor_metrics.clone()),
    ]);
    prometheus.wait_ready(Duration::from_secs(30)).await;

    let tenants = world.install_tenants(&ingest, "observed-", 2).await;
    // The first REST call is rate limited, the next two fail: the client waits out
    // Retry-After, and the retries come out of the event's budget of three attempts.
    world
        .confluence
        .misbehave(Fault::rate_limited(1), FaultSpan::Requests(1));
    world
        .confluence
        .misbehave(Fault::unavailable(None), FaultSpan::Requests(2));
    for tenant in &tenants {
        for sequence in 0..10 {
            let answer = ingest.deliver(tenant, sequence, 5).await;
            assert!(
                answer.event_id.is_some(),
                "webhook {sequence} of {} was not acknowledged",
                tenant.client_key
            );
        }
    }
    // A page the site does not have: Confluence answers 404, the handler fails for good,
    // the event is dead-lettered.
    let gone = serde_json::json!({"page": {"id": 4040404, "title": "Gone"}}).to_string();
    let answer = ingest
        .webhook(&tenants[0], "page_created", gone.as_bytes())
        .await;
    assert_eq!(answer.status(), 204, "{}", answer.text());
    // Rejections: a forged signature and an event the app does not subscribe to.
    let mut forged = tenants[0].clone();
    forged.secret = "not-the-secret".into();
    let answer = ingest.webhook(&forged, "page_updated", b"{}").await;
    assert_eq!(answer.status(), 401);
    let answer = ingest
        .send(&Raw::post_bytes("/webhooks/no_such_event", b"{}".to_vec()))
        .await;
    assert_eq!(answer.status(), 404);

    // The processor works through the stream before the broker goes away.
    let deadline = Instant::now() + Duration::from_secs(60);
    let calls = |status: u16| {
        world
            .confluence
            .calls()
            .iter()
            .filter(|c| c.status == status)
            .count()
    };
    while calls(200) < 20 || calls(404) < 1 {
        assert!(
            Instant::now() < deadline,
            "the processor did not call Confluence for every event: {} calls\n{}",
            world.confluence.hits(),
            processor.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A broker outage: the ingest sheds with 503 rather than answering 2xx for what it
    // could not make durable.
    world.broker_down().await;
    let shed = ingest
        .webhook(&tenants[1], "page_updated", &tenants[1].page_event(99))
        .await;
    world.broker_up().await;
    assert_eq!(shed.status(), 503, "{}", shed.text());

    // Every panel must show data; scrapes and librdkafka's statistics take a few seconds.
    let queries = panel_queries();
    assert!(queries.len() >= 15, "dashboards have their panels");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut empty: Vec<String>;
    loop {
        empty = Vec::new();
        for (panel, query) in &queries {
            match prometheus.series_count(query).await {
                Ok(n) if n > 0 => {}
                Ok(_) => empty.push(format!("{panel}: {query}")),
                Err(e) => panic!("{panel}: {query} is not valid PromQL: {e}"),
            }
        }
        if empty.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(prometheus.targets_up().await, "both services were scraped");
    assert!(
        empty.is_empty(),
        "panel queries without series:\n{}",
        empty.join("\n")
    );
    println!("{} panel queries, every one with series", queries.len());

    let stopped = processor.terminate(Duration::from_secs(20));
    assert!(
        stopped.is_some_and(|s| s.success()),
        "processor stops cleanly: {stopped:?}\n{}",
        processor.log_tail(20)
    );
}
