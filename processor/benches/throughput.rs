//! Processor throughput against librdkafka's mock broker and the local PostgreSQL, once with
//! a no-op handler and once with a handler that writes one state key per event:
//! `cargo bench -p tributary-processor --bench throughput [-- EVENTS TENANTS]`.
//!
//! Prints figures; it asserts nothing about speed. Every handled event still costs what the
//! runtime guarantees: ordering per tenant, the handled-event record (and the state write)
//! committed in Postgres, offsets stored only behind finished events. The clock runs from
//! the first handler call until every record is committed.

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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Work {
    Nothing,
    OneStateWrite,
}

// The runtime a processor gets by default (`processor_worker_threads = 1`).
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let events: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let tenants: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let kafka = MockKafka::start(1);
    for (work, label) in [
        (Work::Nothing, "no-op handler"),
        (Work::OneStateWrite, "one state write per event"),
    ] {
        let topic = match work {
            Work::Nothing => format!("{TOPIC}.noop"),
            Work::OneStateWrite => format!("{TOPIC}.state"),
        };
        kafka.create_topic(&topic, 6);
        let db = TestDatabase::create().await;
        produce(&kafka, &topic, events, tenants).await;
        let (count, seconds) = consume(&kafka, &db, &topic, events, work).await;
        println!(
            "processor ({label}, concurrency 64, mock broker, local PostgreSQL): {count} events in {seconds:.2}s = {:.0} events/s",
            count as f64 / seconds.max(f64::EPSILON)
        );
    }
}

async fn produce(kafka: &MockKafka, topic: &str, events: u64, tenants: u64) {
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
        let mut record = FutureRecord::to(topic)
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
}

/// Runs a processor until every event's handled-event record is committed; the count and
/// the seconds from the first handler call to the last commit seen.
async fn consume(
    kafka: &MockKafka,
    db: &TestDatabase,
    topic: &str,
    events: u64,
    work: Work,
) -> (u64, f64) {
    let config = Config::load_from(
        None,
        [
            (
                "TRIBUTARY_KAFKA_BROKERS",
                kafka.bootstrap_servers().to_string(),
            ),
            ("TRIBUTARY_DATABASE_URL", db.url.clone()),
            ("TRIBUTARY_SECRET_KEY", test_secret_key_base64()),
            ("TRIBUTARY_PROCESSOR_TOPICS", topic.to_string()),
            ("TRIBUTARY_PROCESSOR_GROUP_ID", format!("bench-{topic}")),
            ("TRIBUTARY_PROCESSOR_CONCURRENCY", "64".to_string()),
            ("TRIBUTARY_DATABASE_MAX_CONNECTIONS", "16".to_string()),
            ("TRIBUTARY_METRICS_LISTEN", "127.0.0.1:0".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    )
    .expect("settings");
    kafka.create_topic(&config.dead_letter_topic(topic), 1);
    let handled = Arc::new(AtomicU64::new(0));
    let first = Arc::new(std::sync::OnceLock::<Instant>::new());
    let (counter, first_seen) = (handled.clone(), first.clone());
    let processor = Processor::builder(config)
        .database(db.pool.clone())
        .on("page_created", move |ctx: Context| {
            let (counter, first_seen) = (counter.clone(), first_seen.clone());
            async move {
                first_seen.get_or_init(Instant::now);
                counter.fetch_add(1, Ordering::Relaxed);
                if work == Work::OneStateWrite {
                    let page = ctx.event().page().and_then(|p| p.id).unwrap_or_default();
                    ctx.state().set("last_page", &page)?;
                }
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
    let mut recorded = 0;
    while Instant::now() < deadline {
        recorded = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM handled_events")
            .fetch_one(&db.pool)
            .await
            .expect("count records");
        if recorded as u64 >= events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = Instant::now();
    let since_first = first.get().map(|t| done - *t).unwrap_or_default();
    shutdown.cancel();
    let _ = running.await;
    (recorded as u64, since_first.as_secs_f64())
}
