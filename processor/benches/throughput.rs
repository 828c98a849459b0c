//! Processor throughput with a no-op handler, against librdkafka's mock broker and the local
//! PostgreSQL: `cargo bench -p tributary-processor --bench throughput [-- EVENTS TENANTS]`.
//!
//! Prints figures; it asserts nothing about speed. Every handled event still costs what the
//! runtime guarantees: ordering per tenant, the handled-event record committed in Postgres,
//! offsets stored only behind finished events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tributary_common::Config;
use tributary_common::envelope::{Envelope, EventKind};
use tributary_common::kafka::envelope_headers;
use tributary_common::shutdown::Shutdown;
use tributary_devkit::{MockKafka, TestDatabase, test_secret_key_base64};
use tributary_processor::{Context, HandlerError, Processor};

const TOPIC: &str = "bench.events";

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let events: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let tenants: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let kafka = MockKafka::start(1);
    kafka.create_topic(TOPIC, 6);
    kafka.create_topic(&format!("{TOPIC}.dlq"), 1);
    let db = TestDatabase::create().await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let started = Instant::now();
    let mut pending = Vec::with_capacity(10_000);
    for n in 0..events {
        let tenant = format!("bench-tenant-{}", n % tenants);
        let body = format!("{{\"page\":{{\"id\":{n},\"title\":\"Page {n}\"}},\"timestamp\":1}}");
        let envelope = Envelope::new(
            EventKind::Webhook("page_created".into()),
            &tenant,
            &format!("https://{tenant}.atlassian.net/wiki"),
            Bytes::from(body),
        );
        let mut record = FutureRecord::to(TOPIC)
            .key(envelope.key())
            .payload(envelope.data.as_ref())
            .headers(envelope_headers(&envelope));
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                // The local queue is full: wait for what is in flight, then try again.
                Err((_, returned)) => {
                    record = returned;
                    for sent in futures::future::join_all(pending.drain(..)).await {
                        let _ = sent.expect("delivery reported").expect("delivered");
                    }
                }
            }
        }
        if pending.len() == 10_000 {
            for sent in futures::future::join_all(pending.drain(..)).await {
                let _ = sent.expect("delivery reported").expect("delivered");
            }
        }
    }
    for sent in futures::future::join_all(pending).await {
        let _ = sent.expect("delivery reported").expect("delivered");
    }
    println!(
        "produced {events} events for {tenants} tenants in {:.2}s (mock broker)",
        started.elapsed().as_secs_f64()
    );

    let config = Config::load_from(
        None,
        [
            (
                "TRIBUTARY_KAFKA_BROKERS",
                kafka.bootstrap_servers().to_string(),
            ),
            ("TRIBUTARY_DATABASE_URL", db.url.clone()),
            ("TRIBUTARY_SECRET_KEY", test_secret_key_base64()),
            ("TRIBUTARY_PROCESSOR_TOPICS", TOPIC.to_string()),
            ("TRIBUTARY_PROCESSOR_GROUP_ID", "bench".to_string()),
            ("TRIBUTARY_PROCESSOR_CONCURRENCY", "64".to_string()),
            ("TRIBUTARY_DATABASE_MAX_CONNECTIONS", "16".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    )
    .expect("settings");
    let handled = Arc::new(AtomicU64::new(0));
    let first = Arc::new(std::sync::OnceLock::<Instant>::new());
    let (counter, first_seen) = (handled.clone(), first.clone());
    let processor = Processor::builder(config)
        .database(db.pool.clone())
        .on("page_created", move |_ctx: Context| {
            let (counter, first_seen) = (counter.clone(), first_seen.clone());
            async move {
                first_seen.get_or_init(Instant::now);
                counter.fetch_add(1, Ordering::Relaxed);
                Ok::<(), HandlerError>(())
            }
        })
        .build()
        .await
        .expect("processor builds");
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let running = tokio::spawn(async move { processor.run(stop).await });
    let deadline = Instant::now() + Duration::from_secs(600);
    while handled.load(Ordering::Relaxed) < events && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = Instant::now();
    let count = handled.load(Ordering::Relaxed);
    let since_first = first.get().map(|t| done - *t).unwrap_or_default();
    println!(
        "processor (no-op handler, concurrency 64, mock broker, local PostgreSQL): {count} events in {:.2}s = {:.0} events/s",
        since_first.as_secs_f64(),
        count as f64 / since_first.as_secs_f64().max(f64::EPSILON)
    );
    shutdown.cancel();
    let _ = running.await;
}
