//! Kafka without a Kafka installation: librdkafka's mock cluster on a thread of its own
//! ([`EmbeddedKafka`], the broker of `tributary dev` and `tributary embedded-broker`), the
//! same cluster with panicking operations for tests ([`MockKafka`]), and readers of whole
//! topics; and the broker of an end-to-end test ([`TestBroker`]), that mock or the real broker
//! `KAFKA_BROKERS` names.

mod broker;
mod embedded;
mod mock;

pub use broker::{
    KAFKA_BROKERS_VAR, TestBroker, create_topic, real_broker, skip_without_fault_injection,
    topic_partitions, wait_until_serving,
};
pub use embedded::{EmbeddedKafka, EmbeddedKafkaError};
pub use mock::{MockKafka, header_text, payload_text, read_all, read_topic};
