//! Broker outages: nothing answered 204 is missing, nothing refused is published.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use tributary_ingest::app::EVENT_ID_HEADER;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_down_answers_503_in_bounded_time_and_the_retry_lands() {
    if skip_without_fault_injection("broker_down_answers_503_in_bounded_time_and_the_retry_lands") {
        return;
    }
    let world = world().await;
    let ingest = world.ingest(&[]).await;
    let tenant = Tenant::new("stark");
    assert_eq!(ingest.install(&tenant).await.status(), 204);

    world.broker_down().await;
    let request = tenant.webhook_request("page_created", &page_event("retry-me"));
    let started = Instant::now();
    let refused = ingest.send(&request).await;
    let waited = started.elapsed();
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some(RETRY_AFTER_SECONDS)
    );
    assert_eq!(refused.code(), "broker_unavailable");
    // Generous margin: the point is that the answer is bounded by the setting, not endless.
    assert!(
        waited < Duration::from_millis(PUBLISH_TIMEOUT_MS) + Duration::from_secs(5),
        "answered after {waited:?}"
    );

    world.broker_up().await;
    // Confluence would not retry, but a sender that does gets its 204 once the broker is back
    // and the producer has reconnected; the same signed request is reused as is.
    let mut accepted = None;
    for _ in 0..30 {
        let response = ingest.send(&request).await;
        if response.status() == 204 {
            accepted = response
                .headers()
                .get(EVENT_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            break;
        }
        assert_eq!(response.status(), 503);
    }
    let accepted = accepted.expect("accepted once the broker is back");
    let records = world.records(EVENTS_TOPIC).await;
    let record = records
        .iter()
        .find(|r| header(r, "ce_id").as_deref() == Some(accepted.as_str()))
        .expect("the acknowledged record is on the topic");
    assert!(payload_text(record).contains("retry-me"));
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_webhooks_while_the_broker_flaps_lose_nothing_acknowledged() {
    if skip_without_fault_injection(
        "concurrent_webhooks_while_the_broker_flaps_lose_nothing_acknowledged",
    ) {
        return;
    }
    let world = world().await;
    let ingest = Arc::new(world.ingest(&[]).await);
    let tenant = Tenant::new("wayne");
    assert_eq!(ingest.install(&tenant).await.status(), 204);
    let impostor = Tenant {
        secret: "not-the-secret".into(),
        ..tenant.clone()
    };

    let send = |i: usize, delay_ms: u64| {
        let ingest = ingest.clone();
        // One in ten is signed with the wrong secret and must never be published.
        let (sender, marker) = if i % 10 == 7 {
            (impostor.clone(), format!("bad-{i}"))
        } else {
            (tenant.clone(), format!("good-{i}"))
        };
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let response = ingest
                .webhook(&sender, "page_created", &page_event(&marker))
                .await;
            let id = response
                .headers()
                .get(EVENT_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (marker, response.status().as_u16(), id)
        })
    };

    // Twenty while the broker is steady, all at once.
    let mut tasks: Vec<_> = (0..20).map(|i| send(i, 0)).collect();
    let mut outcomes = Vec::new();
    for task in tasks.drain(..) {
        outcomes.push(task.await.expect("request task"));
    }

    // The rest spread over a few seconds while the broker goes down and up at random.
    let flapping = Arc::new(AtomicBool::new(true));
    let flapper = {
        let kafka = world.kafka.clone();
        let flapping = flapping.clone();
        std::thread::spawn(move || {
            let mut rng = rand::thread_rng();
            let mut toggles = 0;
            while flapping.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(rng.gen_range(100..1200)));
                kafka.broker_down();
                std::thread::sleep(Duration::from_millis(rng.gen_range(200..900)));
                kafka.broker_up();
                toggles += 1;
            }
            toggles
        })
    };
    let delays: Vec<u64> = {
        let mut rng = rand::thread_rng();
        (20..200).map(|_| rng.gen_range(0..6000)).collect()
    };
    tasks.extend((20..200).zip(delays).map(|(i, delay)| send(i, delay)));
    for task in tasks {
        outcomes.push(task.await.expect("request task"));
    }
    flapping.store(false, Ordering::SeqCst);
    let toggles = tokio::task::spawn_blocking(move || flapper.join().expect("flapper"))
        .await
        .expect("join");
    world.broker_up().await;

    let records = world.records(EVENTS_TOPIC).await;
    let on_topic: HashSet<String> = records.iter().filter_map(|r| header(r, "ce_id")).collect();
    let bodies: Vec<String> = records.iter().map(payload_text).collect();
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for (marker, status, id) in &outcomes {
        *by_status.entry(*status).or_default() += 1;
        match status {
            204 => {
                let id = id.as_ref().expect("204 names its event id");
                assert!(
                    on_topic.contains(id),
                    "{marker} was acknowledged but is missing"
                );
            }
            503 => {}
            401 => {
                assert!(marker.starts_with("bad-"), "{marker} refused");
                let quoted = format!("\"{marker}\"");
                assert!(
                    !bodies.iter().any(|b| b.contains(&quoted)),
                    "{marker} published"
                );
            }
            other => panic!("{marker}: unexpected status {other}"),
        }
    }
    assert_eq!(by_status.get(&401).copied().unwrap_or(0), 20);
    assert!(
        by_status.get(&204).copied().unwrap_or(0) >= 18,
        "{by_status:?}"
    );
    println!(
        "outcomes {by_status:?}, broker outages {toggles}, records {}",
        records.len()
    );
    if let Ok(ingest) = Arc::try_unwrap(ingest) {
        ingest.stop().await.expect("clean stop");
    }
}
