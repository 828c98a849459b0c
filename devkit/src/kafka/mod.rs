//! Kafka without a Kafka installation: librdkafka's mock cluster on a thread of its own
//! ([`EmbeddedKafka`], the broker of `tributary dev` and `tributary embedded-broker`), the
//! same cluster with panicking operations for tests ([`MockKafka`]), and readers of whole
//! topics.

mod embedded;
mod mock;

pub use embedded::{EmbeddedKafka, EmbeddedKafkaError};
pub use mock::{MockKafka, header_text, payload_text, read_all, read_topic};
