//! Kafka client settings shared by producers and consumers.

use rdkafka::ClientConfig;

use crate::config::Config;

/// Client settings in three layers: Tributary's `defaults`, then the operator's
/// `kafka_client_properties` (which win over the defaults), then `guarantees`, which no
/// property may change because the delivery promises rest on them.
fn layered(
    config: &Config,
    defaults: &[(&str, String)],
    guarantees: &[(&str, String)],
) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.kafka_brokers);
    for (key, value) in defaults {
        client.set(*key, value);
    }
    for property in &config.kafka_client_properties {
        if let Some((key, value)) = property.split_once('=') {
            let key = key.trim();
            if guarantees.iter().any(|(fixed, _)| *fixed == key) {
                tracing::warn!(
                    property = key,
                    "kafka_client_properties cannot change this setting; ignored"
                );
                continue;
            }
            client.set(key, value.trim());
        }
    }
    for (key, value) in guarantees {
        client.set(*key, value);
    }
    client
}

/// Settings every client gets: brokers plus the operator's extra properties.
pub fn base_client_config(config: &Config) -> ClientConfig {
    layered(config, &[], &[])
}

/// A producer that never loses or reorders an acknowledged record: every in-sync replica
/// must have it (`acks=all`) and retries cannot duplicate (`enable.idempotence`).
/// `delivery_timeout_ms` bounds how long librdkafka keeps trying one record.
pub fn durable_producer_config(config: &Config, delivery_timeout_ms: u64) -> ClientConfig {
    layered(
        config,
        &[
            ("linger.ms", "2".into()),
            ("message.timeout.ms", delivery_timeout_ms.max(1).to_string()),
            ("queue.buffering.max.messages", "100000".into()),
            // Reconnect quickly once a broker is back: Confluence does not resend a webhook,
            // so every second spent in back-off is a second of 503s.
            ("reconnect.backoff.ms", "50".into()),
            ("reconnect.backoff.max.ms", "1000".into()),
        ],
        &[
            ("acks", "all".into()),
            ("enable.idempotence", "true".into()),
        ],
    )
}

/// A consumer in `group_id` that never commits on its own: offsets are stored by the
/// runtime once an event is finished, and committed from there.
pub fn manual_consumer_config(config: &Config, group_id: &str) -> ClientConfig {
    layered(
        config,
        &[
            ("auto.offset.reset", "earliest".into()),
            ("partition.assignment.strategy", "cooperative-sticky".into()),
            // librdkafka prefetches up to 64 MiB by default; 16 MiB keeps a processor's
            // memory bounded and is still far ahead of any handler.
            ("queued.max.messages.kbytes", "16384".into()),
            // A broker that does not answer a fetch as soon as data arrives (the embedded
            // one) would otherwise add up to librdkafka's 500 ms to every event's latency;
            // a real broker answers at once either way.
            ("fetch.wait.max.ms", "50".into()),
        ],
        &[
            ("group.id", group_id.to_string()),
            ("enable.auto.commit", "true".into()),
            ("enable.auto.offset.store", "false".into()),
        ],
    )
}
