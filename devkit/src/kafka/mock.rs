//! librdkafka's mock Kafka cluster for tests: [`EmbeddedKafka`] with operations that panic
//! on failure, plus a reader of whole topics.
//!
//! The handle is `Send + Sync` and usable from async tests. Brokers listen on loopback
//! ports, so child processes can use [`MockKafka::bootstrap_servers`] as well.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::EmbeddedKafka;

pub struct MockKafka {
    cluster: EmbeddedKafka,
}

impl MockKafka {
    /// Starts a cluster of `brokers` brokers (ids 1..=brokers).
    pub fn start(brokers: i32) -> MockKafka {
        MockKafka {
            cluster: EmbeddedKafka::start(brokers).expect("mock kafka cluster starts"),
        }
    }

    pub fn bootstrap_servers(&self) -> &str {
        self.cluster.bootstrap_servers()
    }

    /// Creates `topic` (the mock has no CreateTopics API).
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        self.cluster
            .create_topic(topic, partitions)
            .expect("mock kafka creates the topic");
    }

    /// Disconnects every broker and refuses new connections.
    pub fn broker_down(&self) {
        self.cluster.broker_down().expect("mock kafka broker down");
    }

    pub fn broker_up(&self) {
        self.cluster.broker_up().expect("mock kafka broker up");
    }

    /// The next requests of kind `api` fail with `errors`, one each, in order.
    pub fn request_errors(&self, api: RDKafkaApiKey, errors: &[RDKafkaRespErr]) {
        self.cluster
            .request_errors(api, errors)
            .expect("mock kafka takes request errors");
    }

    pub fn clear_request_errors(&self, api: RDKafkaApiKey) {
        self.cluster
            .clear_request_errors(api)
            .expect("mock kafka clears request errors");
    }

    /// Delays every broker's answers by `delay`.
    pub fn round_trip_time(&self, delay: Duration) {
        self.cluster
            .round_trip_time(delay)
            .expect("mock kafka takes a round-trip time");
    }

    /// Every record on `topic` now, read from the beginning of each partition, in partition
    /// then offset order. Blocking; gives up after `timeout`.
    pub fn read_all(&self, topic: &str, timeout: Duration) -> Vec<OwnedMessage> {
        read_all(self.bootstrap_servers(), topic, timeout)
    }
}

/// [`read_all`] from async code, on a blocking thread.
pub async fn read_topic(bootstrap: &str, topic: &str, timeout: Duration) -> Vec<OwnedMessage> {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || read_all(&bootstrap, &topic, timeout))
        .await
        .expect("topic reader")
}

/// The value of header `name` of a record, as text.
pub fn header_text(message: &OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// The payload of a record, as text.
pub fn payload_text(message: &OwnedMessage) -> String {
    String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned()
}

/// Reads every record of `topic` on `bootstrap` (a mock or a real cluster).
pub fn read_all(bootstrap: &str, topic: &str, timeout: Duration) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("reader consumer");
    let deadline = Instant::now() + timeout;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .expect("topic metadata");
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut assignment = TopicPartitionList::new();
    for partition in &partitions {
        assignment
            .add_partition_offset(topic, *partition, Offset::Beginning)
            .expect("assign partition");
    }
    consumer.assign(&assignment).expect("assign");
    let mut at_end = std::collections::HashSet::new();
    let mut messages = Vec::new();
    while at_end.len() < partitions.len() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => messages.push(message.detach()),
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(_)) | None => {}
        }
    }
    messages.sort_by_key(|m| (m.partition(), m.offset()));
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use tributary_common::envelope::{Envelope, EventKind};
    use tributary_common::kafka::{envelope_from_message, envelope_headers};

    #[tokio::test]
    async fn envelopes_survive_a_trip_through_the_mock_broker() {
        let kafka = MockKafka::start(1);
        kafka.create_topic("t", 2);
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", kafka.bootstrap_servers())
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()
            .expect("producer");
        let envelope = Envelope::new(
            EventKind::Webhook("page_created".into()),
            "tenant-a",
            "https://acme.atlassian.net/wiki",
            bytes::Bytes::from_static(b"{\"page\":{\"id\":1}}"),
        );
        producer
            .send(
                FutureRecord::to("t")
                    .key(envelope.key())
                    .payload(envelope.data.as_ref())
                    .headers(envelope_headers(&envelope)),
                Duration::from_secs(5),
            )
            .await
            .expect("delivered");
        let read = tokio::task::spawn_blocking(move || {
            let messages = kafka.read_all("t", Duration::from_secs(10));
            drop(kafka);
            messages
        })
        .await
        .expect("reader");
        assert_eq!(read.len(), 1);
        assert_eq!(envelope_from_message(&read[0]).expect("decodes"), envelope);
    }
}
