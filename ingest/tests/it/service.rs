//! Health, readiness, overload and a clean stop.

use std::time::Duration;

use serde_json::Value;
use tributary_ingest::app::EVENT_ID_HEADER;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_turns_unready_when_the_database_or_the_broker_is_unreachable() {
    if skip_without_fault_injection(
        "readyz_turns_unready_when_the_database_or_the_broker_is_unreachable",
    ) {
        return;
    }
    let world = world().await;
    let ingest = world.ingest(&[]).await;
    assert_eq!(ingest.get("/healthz").await.status(), 200);
    let ready = ingest.get("/readyz").await;
    assert_eq!(ready.status(), 200);

    world.broker_down().await;
    let unready = ingest.get("/readyz").await;
    assert_eq!(unready.status(), 503);
    let report: Value = unready.json().expect("JSON");
    assert_eq!(report["broker"], "unavailable");
    assert_eq!(report["database"], "ok");
    world.broker_up().await;

    // Dropping the test database terminates every connection to it and removes it.
    world.stop_database().await;
    let unready = ingest.get("/readyz").await;
    assert_eq!(unready.status(), 503);
    let report: Value = unready.json().expect("JSON");
    assert_eq!(report["database"], "unavailable");
    assert_eq!(ingest.get("/healthz").await.status(), 200, "still alive");

    // A webhook for which the store must be read now answers 503, not 401.
    let tenant = Tenant::new("offline");
    let refused = ingest
        .webhook(&tenant, "page_created", &page_event("x"))
        .await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.code(), "store_unavailable");
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn beyond_the_in_flight_bound_the_answer_is_an_immediate_503() {
    if skip_without_fault_injection("beyond_the_in_flight_bound_the_answer_is_an_immediate_503") {
        return;
    }
    let world = world().await;
    let ingest = std::sync::Arc::new(
        world
            .ingest(&[
                ("TRIBUTARY_INGEST_MAX_IN_FLIGHT", "2"),
                ("TRIBUTARY_INGEST_PUBLISH_TIMEOUT_MS", "5000"),
            ])
            .await,
    );
    let tenant = Tenant::new("busy");
    assert_eq!(ingest.install(&tenant).await.status(), 204);
    world.broker_down().await;
    // Six at once: two take the slots and wait for the absent broker, the rest are shed.
    let requests: Vec<_> = (0..6)
        .map(|i| {
            let ingest = ingest.clone();
            let tenant = tenant.clone();
            tokio::spawn(async move {
                let response = ingest
                    .webhook(&tenant, "page_created", &page_event(&format!("held-{i}")))
                    .await;
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                (status, retry_after, response.code())
            })
        })
        .collect();
    let mut shed = 0;
    for request in requests {
        let (status, retry_after, code) = request.await.expect("request");
        assert_eq!(status, 503);
        assert!(retry_after, "503 carries Retry-After");
        match code.as_str() {
            "overloaded" => shed += 1,
            "broker_unavailable" => {}
            other => panic!("unexpected code {other}"),
        }
    }
    assert!(shed >= 1, "requests beyond the bound were shed");
    world.broker_up().await;
    let metrics = ingest.metrics().await;
    assert!(metrics.contains("tributary_ingest_rejected_total{reason=\"overloaded\"}"));
    if let Ok(ingest) = std::sync::Arc::try_unwrap(ingest) {
        ingest.stop().await.expect("clean stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_finishes_the_request_in_flight_then_stops_accepting() {
    if skip_without_fault_injection("shutdown_finishes_the_request_in_flight_then_stops_accepting")
    {
        return;
    }
    let world = world().await;
    let ingest = world
        .ingest(&[("TRIBUTARY_INGEST_PUBLISH_TIMEOUT_MS", "10000")])
        .await;
    let tenant = Tenant::new("closing");
    assert_eq!(ingest.install(&tenant).await.status(), 204);

    // Slow acknowledgements keep the next webhook in flight while the signal arrives.
    world.broker_round_trip(Duration::from_millis(500)).await;
    let request = tenant.webhook_request("page_created", &page_event("in-flight"));
    let send = ingest.send(&request);
    // The signal goes out once the request is being handled (the in-flight gauge shows it).
    let signal = async {
        loop {
            let metrics = ingest.metrics().await;
            let in_flight = metrics
                .lines()
                .find_map(|line| line.strip_prefix("tributary_ingest_in_flight_requests "))
                .and_then(|value| value.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            if in_flight >= 1.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ingest.begin_stop();
    };
    let (response, ()) = tokio::join!(send, signal);
    let status = response.status();
    let id = response
        .headers()
        .get(EVENT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let answer = response.text();
    assert_eq!(status, 204, "the request in flight completes: {answer}");
    let id = id.expect("event id");
    let addr = ingest.addr;
    ingest.stop().await.expect("clean stop");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
    let records = world.records(EVENTS_TOPIC).await;
    assert!(
        records
            .iter()
            .any(|r| header(r, "ce_id").as_deref() == Some(id.as_str()))
    );
}
