use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use tributary_devkit::kafka::MockKafka;

use super::*;

fn config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "5000");
    config
}

fn headers(index: usize) -> OwnedHeaders {
    OwnedHeaders::new().insert(Header {
        key: "index",
        value: Some(index.to_string().as_bytes()),
    })
}

/// On a single-thread runtime every report is served by the runtime's one thread: without
/// the serving task no send would ever complete.
#[test]
fn every_send_completes_with_the_broker_ack_on_a_single_thread_runtime() {
    let kafka = MockKafka::start(1);
    kafka.create_topic("reports", 3);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let producer =
            ReportingProducer::create(&config(kafka.bootstrap_servers()), DefaultClientContext)
                .expect("producer");
        let mut deliveries = Vec::new();
        for index in 0..500 {
            let key = format!("tenant-{}", index % 7);
            let payload = format!("{{\"n\":{index}}}");
            deliveries.push(
                producer
                    .send("reports", key.as_str(), payload.as_str(), headers(index))
                    .expect("queued"),
            );
        }
        for (index, delivery) in deliveries.into_iter().enumerate() {
            let answer = tokio::time::timeout(Duration::from_secs(30), delivery)
                .await
                .expect("the report arrives")
                .expect("the report is sent, not dropped");
            assert!(answer.is_ok(), "record {index}: {answer:?}");
        }
    });
    let records = kafka.read_all("reports", Duration::from_secs(10));
    assert_eq!(records.len(), 500);
    let mut seen: Vec<usize> = records
        .iter()
        .map(|record| {
            let header = record.headers().expect("headers").get(0);
            std::str::from_utf8(header.value.expect("value"))
                .expect("utf-8")
                .parse()
                .expect("number")
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..500).collect::<Vec<_>>());
    assert!(records.iter().all(|r| r.payload().is_some()));
}

/// A record no broker takes ends as an error at its delivery timeout, not as a wait forever.
#[tokio::test]
async fn a_record_no_broker_takes_fails_at_its_delivery_timeout() {
    // Nothing listens on port 9 of loopback (discard) in the test environment.
    let mut config = config("127.0.0.1:9");
    config.set("message.timeout.ms", "300");
    let producer = ReportingProducer::create(&config, DefaultClientContext).expect("producer");
    let delivery = producer
        .send("reports", "key", "payload", OwnedHeaders::new())
        .expect("queued");
    let answer = tokio::time::timeout(Duration::from_secs(30), delivery)
        .await
        .expect("the report arrives")
        .expect("the report is sent, not dropped");
    assert!(
        matches!(answer, Err(KafkaError::MessageProduction(_))),
        "{answer:?}"
    );
}

/// A full local queue refuses the record at once instead of queueing it for later.
#[tokio::test]
async fn a_full_local_queue_refuses_at_once() {
    let mut config = config("127.0.0.1:9");
    config.set("queue.buffering.max.messages", "1");
    let producer = ReportingProducer::create(&config, DefaultClientContext).expect("producer");
    let _first = producer
        .send("reports", "key", "one", OwnedHeaders::new())
        .expect("queued");
    let second = producer.send("reports", "key", "two", OwnedHeaders::new());
    assert!(
        matches!(second, Err(KafkaError::MessageProduction(_))),
        "{:?}",
        second.err()
    );
}

#[test]
fn outside_a_runtime_it_says_so() {
    let created = ReportingProducer::create(&config("127.0.0.1:9"), DefaultClientContext);
    assert!(matches!(created, Err(ProducerSetupError::NoRuntime)));
}

/// Once the last clone is gone the serving task ends: the runtime then has no task left to
/// run, and a `block_on` of a future that waits for it returns.
#[test]
fn the_serving_task_ends_with_the_last_clone() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let producer = ReportingProducer::create(&config("127.0.0.1:9"), DefaultClientContext)
            .expect("producer");
        let clone = producer.clone();
        let shared = Arc::downgrade(&producer.shared);
        drop(producer);
        assert!(shared.upgrade().is_some(), "a clone still holds it");
        drop(clone);
        assert!(
            shared.upgrade().is_none(),
            "the task holds no strong reference"
        );
        let tasks = tokio::runtime::Handle::current().metrics();
        for _ in 0..100 {
            if tasks.num_alive_tasks() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} tasks still alive", tasks.num_alive_tasks());
    });
}
