//! Kafka client settings shared by producers and consumers, and envelope conversion.

use rdkafka::ClientConfig;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};

use crate::config::Config;
use crate::envelope::{Envelope, EnvelopeError};

/// Settings every client gets: brokers plus the operator's extra properties.
pub fn base_client_config(config: &Config) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.kafka_brokers);
    for property in &config.kafka_client_properties {
        if let Some((key, value)) = property.split_once('=') {
            client.set(key.trim(), value.trim());
        }
    }
    client
}

/// A producer that never loses or reorders an acknowledged record: every in-sync replica
/// must have it (`acks=all`) and retries cannot duplicate (`enable.idempotence`).
/// `delivery_timeout_ms` bounds how long librdkafka keeps trying one record.
pub fn durable_producer_config(config: &Config, delivery_timeout_ms: u64) -> ClientConfig {
    let mut client = base_client_config(config);
    client
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("message.timeout.ms", delivery_timeout_ms.max(1).to_string())
        .set("queue.buffering.max.messages", "100000");
    client
}

/// A consumer in `group_id` that never commits on its own: offsets are stored by the
/// runtime once an event is finished, and committed from there.
pub fn manual_consumer_config(config: &Config, group_id: &str) -> ClientConfig {
    let mut client = base_client_config(config);
    client
        .set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky");
    client
}

/// The record headers of an envelope.
pub fn envelope_headers(envelope: &Envelope) -> OwnedHeaders {
    envelope
        .headers()
        .into_iter()
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        })
}

/// Rebuilds the envelope carried by a consumed record.
pub fn envelope_from_message<M: Message>(message: &M) -> Result<Envelope, EnvelopeError> {
    let headers = message.headers();
    let pairs = headers
        .into_iter()
        .flat_map(|h| h.iter())
        .map(|h| (h.key, h.value));
    Envelope::decode(message.key(), pairs, message.payload())
}
