//! librdkafka's mock Kafka cluster, owned by a thread of its own.
//!
//! The mock cluster is `!Send`, so it lives on a dedicated thread and is driven through a
//! channel; the handle is `Send + Sync` and usable from async tests. Brokers listen on
//! loopback ports, so child processes can use [`MockKafka::bootstrap_servers`] as well.

use std::sync::Mutex;
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

type Reply = Sender<Result<(), String>>;

enum Command {
    CreateTopic(String, i32, Reply),
    BrokerDown(Reply),
    BrokerUp(Reply),
    RequestErrors(RDKafkaApiKey, Vec<RDKafkaRespErr>, Reply),
    ClearRequestErrors(RDKafkaApiKey, Reply),
    RoundTripTime(Duration, Reply),
}

pub struct MockKafka {
    bootstrap: String,
    commands: Mutex<Option<Sender<Command>>>,
    thread: Option<JoinHandle<()>>,
}

impl MockKafka {
    /// Starts a cluster of `brokers` brokers (ids 1..=brokers).
    pub fn start(brokers: i32) -> MockKafka {
        let (command_tx, command_rx) = channel::<Command>();
        let (ready_tx, ready_rx) = channel::<Result<String, String>>();
        let thread = std::thread::Builder::new()
            .name("mock-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(cluster) => cluster,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                let done = |reply: Reply, result: Result<(), KafkaError>| {
                    let _ = reply.send(result.map_err(|e| e.to_string()));
                };
                // Ends when every sender is gone: the handle was dropped.
                for command in command_rx {
                    match command {
                        Command::CreateTopic(topic, partitions, reply) => {
                            done(reply, cluster.create_topic(&topic, partitions, 1))
                        }
                        Command::BrokerDown(reply) => done(reply, cluster.broker_down(-1)),
                        Command::BrokerUp(reply) => done(reply, cluster.broker_up(-1)),
                        Command::RequestErrors(api, errors, reply) => {
                            cluster.request_errors(api, &errors);
                            done(reply, Ok(()))
                        }
                        Command::ClearRequestErrors(api, reply) => {
                            cluster.clear_request_errors(api);
                            done(reply, Ok(()))
                        }
                        Command::RoundTripTime(delay, reply) => {
                            done(reply, cluster.broker_round_trip_time(-1, delay))
                        }
                    }
                }
            })
            .expect("spawn mock kafka thread");
        let bootstrap = ready_rx
            .recv()
            .expect("mock kafka thread answers")
            .expect("mock kafka cluster starts");
        MockKafka {
            bootstrap,
            commands: Mutex::new(Some(command_tx)),
            thread: Some(thread),
        }
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    fn call(&self, make: impl FnOnce(Reply) -> Command) {
        let (reply_tx, reply_rx) = channel();
        let commands = self.commands.lock().expect("mock kafka lock");
        commands
            .as_ref()
            .expect("mock kafka is running")
            .send(make(reply_tx))
            .expect("mock kafka thread alive");
        drop(commands);
        reply_rx
            .recv()
            .expect("mock kafka thread replies")
            .expect("mock kafka operation succeeds");
    }

    /// Creates `topic` (the mock has no CreateTopics API).
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        self.call(|reply| Command::CreateTopic(topic.to_string(), partitions, reply));
    }

    /// Disconnects every broker and refuses new connections.
    pub fn broker_down(&self) {
        self.call(Command::BrokerDown);
    }

    pub fn broker_up(&self) {
        self.call(Command::BrokerUp);
    }

    /// The next requests of kind `api` fail with `errors`, one each, in order.
    pub fn request_errors(&self, api: RDKafkaApiKey, errors: &[RDKafkaRespErr]) {
        self.call(|reply| Command::RequestErrors(api, errors.to_vec(), reply));
    }

    pub fn clear_request_errors(&self, api: RDKafkaApiKey) {
        self.call(|reply| Command::ClearRequestErrors(api, reply));
    }

    /// Delays every broker's answers by `delay`.
    pub fn round_trip_time(&self, delay: Duration) {
        self.call(|reply| Command::RoundTripTime(delay, reply));
    }

    /// Every record on `topic` now, read from the beginning of each partition, in partition
    /// then offset order. Blocking; gives up after `timeout`.
    pub fn read_all(&self, topic: &str, timeout: Duration) -> Vec<OwnedMessage> {
        read_all(&self.bootstrap, topic, timeout)
    }
}

impl Drop for MockKafka {
    fn drop(&mut self) {
        if let Ok(mut commands) = self.commands.lock() {
            commands.take();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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
    use crate::envelope::{Envelope, EventKind};
    use crate::kafka::{envelope_from_message, envelope_headers};
    use rdkafka::producer::{FutureProducer, FutureRecord};

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
