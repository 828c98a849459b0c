//! The broker of an end-to-end test: librdkafka's mock cluster by default, or the real
//! Kafka-protocol broker that `KAFKA_BROKERS` names.
//!
//! On a real broker every test gets names of its own, since tests run in parallel against
//! the one broker: each topic and consumer group a test declares is prefixed with a token
//! unique to the test (a prefix, so that a topic's dead-letter topic, the topic plus a
//! suffix, is the prefixed name of the declared dead-letter topic too). Topics are created
//! through the admin API. Fault injection exists only on the mock: a test that needs it asks
//! [`skip_without_fault_injection`] first.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::types::{RDKafkaApiKey, RDKafkaErrorCode, RDKafkaRespErr};

use super::{MockKafka, read_all};

/// The variable naming a real broker for the end-to-end tests.
pub const KAFKA_BROKERS_VAR: &str = "KAFKA_BROKERS";

/// The real broker `KAFKA_BROKERS` names, if any.
pub fn real_broker() -> Option<String> {
    std::env::var(KAFKA_BROKERS_VAR)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// True (after printing why) when the test named `test` must not run here: it injects
/// broker faults, which only the mock cluster can, and `KAFKA_BROKERS` names a real broker.
pub fn skip_without_fault_injection(test: &str) -> bool {
    match real_broker() {
        Some(brokers) => {
            println!(
                "SKIPPED {test}: it needs the mock broker's fault injection, and \
                 {KAFKA_BROKERS_VAR}={brokers} names a real broker"
            );
            true
        }
        None => false,
    }
}

enum Kind {
    Mock(MockKafka),
    Real { bootstrap: String },
}

pub struct TestBroker {
    kind: Kind,
    /// Prepended to every topic and group name a test declares (empty on the mock).
    prefix: String,
}

impl TestBroker {
    /// The real broker of `KAFKA_BROKERS` when set (waiting until it answers metadata
    /// requests), else a one-broker mock cluster.
    pub fn start() -> TestBroker {
        match real_broker() {
            Some(bootstrap) => TestBroker::real(&bootstrap),
            None => TestBroker::mock(1),
        }
    }

    pub fn mock(brokers: i32) -> TestBroker {
        TestBroker {
            kind: Kind::Mock(MockKafka::start(brokers)),
            prefix: String::new(),
        }
    }

    /// The real broker at `bootstrap`, once it answers a metadata request.
    pub fn real(bootstrap: &str) -> TestBroker {
        wait_until_serving(bootstrap, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("the broker at {bootstrap} does not serve: {e}"));
        let prefix = format!("t{}.", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        println!("broker: the real broker at {bootstrap}, topics and groups prefixed {prefix}");
        TestBroker {
            kind: Kind::Real {
                bootstrap: bootstrap.to_string(),
            },
            prefix,
        }
    }

    pub fn is_real(&self) -> bool {
        matches!(self.kind, Kind::Real { .. })
    }

    pub fn bootstrap_servers(&self) -> &str {
        match &self.kind {
            Kind::Mock(mock) => mock.bootstrap_servers(),
            Kind::Real { bootstrap } => bootstrap,
        }
    }

    /// The name topic `name` has on this broker.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The name consumer group `name` has on this broker.
    pub fn group(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Creates topic `name` (see [`TestBroker::topic`]) with `partitions` partitions.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        match &self.kind {
            Kind::Mock(mock) => mock.create_topic(name, partitions),
            Kind::Real { bootstrap } => {
                let topic = self.topic(name);
                create_topic(bootstrap, &topic, partitions)
                    .unwrap_or_else(|e| panic!("creating {topic} on {bootstrap}: {e}"));
            }
        }
    }

    fn mock_only(&self, what: &str) -> &MockKafka {
        match &self.kind {
            Kind::Mock(mock) => mock,
            Kind::Real { .. } => panic!(
                "{what} needs the mock broker's fault injection; a test that does this must \
                 start with skip_without_fault_injection"
            ),
        }
    }

    /// Disconnects every broker and refuses new connections (mock only).
    pub fn broker_down(&self) {
        self.mock_only("broker_down").broker_down()
    }

    pub fn broker_up(&self) {
        self.mock_only("broker_up").broker_up()
    }

    /// The next requests of kind `api` fail with `errors`, one each, in order (mock only).
    pub fn request_errors(&self, api: RDKafkaApiKey, errors: &[RDKafkaRespErr]) {
        self.mock_only("request_errors").request_errors(api, errors)
    }

    pub fn clear_request_errors(&self, api: RDKafkaApiKey) {
        self.mock_only("clear_request_errors")
            .clear_request_errors(api)
    }

    /// Delays every broker's answers by `delay` (mock only).
    pub fn round_trip_time(&self, delay: Duration) {
        self.mock_only("round_trip_time").round_trip_time(delay)
    }

    /// Every record on topic `name` now, read from the beginning of each partition to its
    /// end, in partition then offset order. Blocking; gives up after `timeout`.
    pub fn read_all(&self, name: &str, timeout: Duration) -> Vec<OwnedMessage> {
        read_all(self.bootstrap_servers(), &self.topic(name), timeout)
    }
}

/// Waits until the broker at `bootstrap` answers a metadata request: an open port is not
/// yet a broker that serves.
pub fn wait_until_serving(bootstrap: &str, timeout: Duration) -> Result<(), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    loop {
        match consumer.fetch_metadata(None, Duration::from_secs(2)) {
            Ok(metadata) if !metadata.brokers().is_empty() => return Ok(()),
            Ok(_) if Instant::now() < deadline => {}
            Err(_) if Instant::now() < deadline => {}
            Ok(_) => return Err("metadata names no broker".into()),
            Err(e) => return Err(e.to_string()),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Creates `topic` through the admin API and waits until metadata shows its partitions.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = futures::executor::block_on(admin.create_topics([&new], &options))
        .map_err(|e| e.to_string())?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("{name}: {code}")),
        }
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(2))
            .ok()
            .and_then(|m| {
                m.topics()
                    .iter()
                    .find(|t| t.name() == topic && t.error().is_none())
                    .map(|t| t.partitions().len())
            });
        if seen == Some(partitions as usize) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{topic} has {seen:?} partitions, not {partitions}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many partitions `topic` has on the broker at `bootstrap` (`None` when metadata does
/// not show it).
pub fn topic_partitions(bootstrap: &str, topic: &str) -> Option<usize> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("allow.auto.create.topics", "false")
        .create()
        .ok()?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()?;
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0)
}
