//! The dashboards against the real thing: the real Prometheus scrapes a running ingest and
//! processor (child processes) while signed traffic, rejections, a broker outage, a
//! dead-lettered event and Confluence calls (rate-limited and failing ones included) go
//! through them; then every panel query of every dashboard must return series.

use std::time::{Duration, Instant};

use serde_json::json;
use tributary_common::connect::token::{RequestTarget, now_unix};
use tributary_common::testing::{
    INSTALL_KEY_1, INSTALL_PUB_1, InstallClaims, KeyServer, MockKafka, TestDatabase,
    sign_from_confluence, sign_install,
};
use tributary_processor::simulator::{Fault, FaultSpan, Simulator, SimulatorSettings};
use tributary_tests::postgres::free_port;
use tributary_tests::prometheus::Prometheus;
use tributary_tests::services::{ServiceProcess, StackEnv, example};

const CLIENT_KEY: &str = "observability-tenant";
const SECRET: &str = "observability-shared-secret-0123456789";

fn dashboards() -> Vec<serde_json::Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/dashboards");
    std::fs::read_dir(dir)
        .expect("dashboards")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| {
            serde_json::from_str(&std::fs::read_to_string(e.path()).expect("read")).expect("json")
        })
        .collect()
}

fn panel_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for dashboard in dashboards() {
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

async fn webhook(
    http: &reqwest::Client,
    ingest: &str,
    event: &str,
    body: serde_json::Value,
    secret: &str,
) -> u16 {
    let path = format!("/webhooks/{event}");
    let token = sign_from_confluence(
        CLIENT_KEY,
        secret,
        RequestTarget {
            method: "POST",
            target: &path,
            base_path: "",
        },
        now_unix(),
        180,
    );
    http.post(format!("{ingest}{path}"))
        .header("authorization", format!("JWT {token}"))
        .json(&body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_series_from_the_running_services() {
    let kafka = MockKafka::start(1);
    kafka.create_topic("tributary.events", 2);
    kafka.create_topic("tributary.events.dlq", 1);
    let db = TestDatabase::create().await;
    let keys = KeyServer::start(&[("kid-1", INSTALL_PUB_1)]).await;
    let stop = tributary_common::shutdown::Shutdown::new();
    let confluence = Simulator::start(
        SimulatorSettings::new("com.example.tributary"),
        stop.clone(),
    )
    .await
    .expect("simulated Confluence");

    let (ingest_port, ingest_metrics, processor_metrics) = (free_port(), free_port(), free_port());
    let ingest_url = format!("http://127.0.0.1:{ingest_port}");
    let env = StackEnv::new(&db.url, kafka.bootstrap_servers(), &keys.url(), &ingest_url);
    let mut ingest = ServiceProcess::spawn(
        "tributary-ingest",
        &env.clone()
            .with(
                "TRIBUTARY_INGEST_LISTEN",
                format!("127.0.0.1:{ingest_port}"),
            )
            .with(
                "TRIBUTARY_METRICS_LISTEN",
                format!("127.0.0.1:{ingest_metrics}"),
            )
            .with("TRIBUTARY_INGEST_PUBLISH_TIMEOUT_MS", "1000"),
    );
    let mut processor = ServiceProcess::spawn_path(
        "page-counter",
        &example("page_counter"),
        &env.clone()
            .with(
                "TRIBUTARY_METRICS_LISTEN",
                format!("127.0.0.1:{processor_metrics}"),
            )
            .with(
                "TRIBUTARY_PROCESSOR_GROUP_ID",
                format!("observability-{}", uuid::Uuid::new_v4().simple()),
            )
            .with("TRIBUTARY_PROCESSOR_RETRY_INITIAL_MS", "50")
            .with("TRIBUTARY_PROCESSOR_COMMIT_INTERVAL_MS", "200")
            .with("TRIBUTARY_CONFLUENCE_MAX_ATTEMPTS", "2")
            .with("TRIBUTARY_CONFLUENCE_RETRY_INITIAL_MS", "100")
            .with("TRIBUTARY_CONFLUENCE_RETRY_MAX_MS", "2000")
            .with("RUST_LOG", "info,librdkafka=off,rdkafka=off"),
    );
    ingest
        .wait_ok(&format!("{ingest_url}/healthz"), Duration::from_secs(30))
        .await;
    ingest
        .wait_ok(
            &format!("http://127.0.0.1:{ingest_metrics}/metrics"),
            Duration::from_secs(10),
        )
        .await;
    processor
        .wait_ok(
            &format!("http://127.0.0.1:{processor_metrics}/metrics"),
            Duration::from_secs(30),
        )
        .await;

    let prometheus = Prometheus::start(&[
        ("tributary-ingest", format!("127.0.0.1:{ingest_metrics}")),
        (
            "tributary-processor",
            format!("127.0.0.1:{processor_metrics}"),
        ),
    ]);
    prometheus.wait_ready(Duration::from_secs(30)).await;

    // A tenant whose site is the simulated Confluence.
    let http = reqwest::Client::new();
    let install = sign_install(
        &InstallClaims {
            client_key: CLIENT_KEY,
            audience: &ingest_url,
            request: RequestTarget {
                method: "POST",
                target: "/lifecycle/installed",
                base_path: "",
            },
            issued_at: now_unix(),
            ttl_seconds: 180,
        },
        "kid-1",
        INSTALL_KEY_1,
    );
    let installed = http
        .post(format!("{ingest_url}/lifecycle/installed"))
        .header("authorization", format!("JWT {install}"))
        .json(&json!({
            "key": "com.example.tributary", "clientKey": CLIENT_KEY, "sharedSecret": SECRET,
            "baseUrl": confluence.base_url(), "productType": "confluence", "eventType": "installed",
        }))
        .send()
        .await
        .expect("install");
    assert_eq!(
        installed.status().as_u16(),
        204,
        "install: {}",
        installed.text().await.unwrap_or_default()
    );
    confluence.register(CLIENT_KEY, SECRET);
    for id in 101..=110 {
        confluence.add_page(CLIENT_KEY, &id.to_string(), "9001", &format!("Page {id}"));
    }
    // The first REST call is rate limited, the next two fail: the client waits out
    // Retry-After, gives up after two attempts, and the runtime retries the handler.
    confluence.misbehave(Fault::rate_limited(1), FaultSpan::Requests(1));
    confluence.misbehave(Fault::unavailable(None), FaultSpan::Requests(2));

    for id in 101..=110 {
        let page = json!({"page": {"id": id, "title": format!("Page {id}"), "spaceKey": "OBS"}, "timestamp": 1});
        assert_eq!(
            webhook(&http, &ingest_url, "page_created", page.clone(), SECRET).await,
            204
        );
        assert_eq!(
            webhook(&http, &ingest_url, "page_updated", page, SECRET).await,
            204
        );
    }
    // A page the site does not have: Confluence answers 404, the handler fails for good,
    // the event is dead-lettered.
    let missing = json!({"page": {"id": 999, "title": "Gone"}});
    assert_eq!(
        webhook(&http, &ingest_url, "page_created", missing, SECRET).await,
        204
    );
    // Rejections.
    assert_eq!(
        webhook(
            &http,
            &ingest_url,
            "page_created",
            json!({}),
            "not-the-secret"
        )
        .await,
        401
    );
    assert_eq!(
        webhook(&http, &ingest_url, "no_such_event", json!({}), SECRET).await,
        404
    );
    // The processor works through the stream: ten pages read back (after one rate-limited
    // and two failing answers) and one missing page, which is dead-lettered.
    let deadline = Instant::now() + Duration::from_secs(60);
    while confluence
        .calls()
        .iter()
        .filter(|c| c.status == 200)
        .count()
        < 10
        || confluence
            .calls()
            .iter()
            .filter(|c| c.status == 404)
            .count()
            < 1
    {
        assert!(
            Instant::now() < deadline,
            "the processor did not call Confluence for every page: {} calls\n{}",
            confluence.received(),
            processor.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A broker outage: the ingest sheds with 503 rather than answering 2xx for what it
    // could not make durable.
    kafka.broker_down();
    let shed = webhook(
        &http,
        &ingest_url,
        "page_updated",
        json!({"page": {"id": 101}}),
        SECRET,
    )
    .await;
    kafka.broker_up();
    assert_eq!(shed, 503);

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
        "panel queries without series:\n{}\n--- processor log ---\n{}",
        empty.join("\n"),
        processor.log()
    );
    println!("{} panel queries, every one with series", queries.len());

    processor.terminate();
    ingest.terminate();
    for service in [&mut processor, &mut ingest] {
        let status = service.wait_exit(Duration::from_secs(20)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not stop cleanly on SIGTERM ({status:?}):\n{}",
            service.name,
            service.log()
        );
    }
    stop.cancel();
    drop(kafka);
}
