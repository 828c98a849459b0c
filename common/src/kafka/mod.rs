//! Kafka: the client settings every producer and consumer gets, and envelopes as records.

mod records;
mod settings;

pub use records::{envelope_from_message, envelope_headers};
pub use settings::{base_client_config, durable_producer_config, manual_consumer_config};
