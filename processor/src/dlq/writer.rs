//! Writing dead letters: the record as consumed plus its origin, acknowledged by the broker
//! before the origin offset may be committed.

use std::sync::OnceLock;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord};
use tributary_common::Config;
use tributary_common::kafka::durable_producer_config;
use tributary_common::routing::dead_letter_topic;

use super::{Reason, header};
use crate::runtime::Record;

/// How long librdkafka keeps trying one dead letter before the runtime tries again.
const DELIVERY_TIMEOUT_MS: u64 = 30_000;
/// Error texts are cut to this many bytes: headers are not the place for stack dumps.
const MAX_ERROR_BYTES: usize = 2048;

/// Why and where from one record is dead-lettered.
#[derive(Debug)]
pub(crate) struct Letter<'a> {
    pub reason: Reason,
    pub handler: &'a str,
    pub error: &'a str,
    pub attempts: u32,
}

/// The producer is made on the first dead letter: an idle rdkafka producer's polling thread
/// still spins for up to a millisecond of every 100 (the binding rounds its remaining wait
/// down to whole milliseconds), about 1% of a core, and most processors never dead-letter.
pub(crate) struct DeadLetterWriter {
    client: ClientConfig,
    producer: OnceLock<FutureProducer>,
    suffix: String,
}

impl DeadLetterWriter {
    /// Fails on settings librdkafka refuses for a producer, so they show at start, not at
    /// the first dead letter.
    pub fn new(config: &Config) -> Result<Self, KafkaError> {
        let client = durable_producer_config(config, DELIVERY_TIMEOUT_MS);
        // A base producer has no polling thread to wait for when it is dropped.
        drop(client.create::<BaseProducer>()?);
        Ok(DeadLetterWriter {
            client,
            producer: OnceLock::new(),
            suffix: config.processor_dlq_suffix.clone(),
        })
    }

    fn producer(&self) -> Result<&FutureProducer, KafkaError> {
        if let Some(producer) = self.producer.get() {
            return Ok(producer);
        }
        let created = self.client.create()?;
        Ok(self.producer.get_or_init(|| created))
    }

    /// Writes `message` to its dead-letter topic and waits for the broker's acknowledgement.
    pub async fn write(&self, message: &Record, letter: &Letter<'_>) -> Result<(), KafkaError> {
        let topic = dead_letter_topic(message.topic(), &self.suffix);
        let headers = dead_letter_headers(message, letter);
        let mut record = FutureRecord::to(&topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.producer()?
            .send(record, Duration::from_millis(DELIVERY_TIMEOUT_MS))
            .await
            .map(|_| ())
            .map_err(|(error, _)| error)
    }
}

fn dead_letter_headers(message: &Record, letter: &Letter<'_>) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    // A record dead-lettered again after a replay carries only its latest origin.
    if let Some(original) = message.headers() {
        for h in original
            .iter()
            .filter(|h| !h.key.starts_with(header::PREFIX))
        {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    let error = truncate(letter.error, MAX_ERROR_BYTES);
    let added = [
        (header::ORIGIN_TOPIC, message.topic().to_string()),
        (header::ORIGIN_PARTITION, message.partition().to_string()),
        (header::ORIGIN_OFFSET, message.offset().to_string()),
        (header::HANDLER, letter.handler.to_string()),
        (header::ERROR, error.to_string()),
        (header::ATTEMPTS, letter.attempts.to_string()),
        (header::REASON, letter.reason.as_str().to_string()),
        (
            header::DEAD_LETTERED_AT,
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ),
    ];
    for (key, value) in &added {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    headers
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;

    use super::*;

    #[test]
    fn origin_headers_replace_older_ones_and_keep_the_event_headers() {
        let original = OwnedHeaders::new()
            .insert(Header {
                key: "ce_id",
                value: Some("e1"),
            })
            .insert(Header {
                key: header::ORIGIN_OFFSET,
                value: Some("99"),
            });
        let message = Record::copied(
            &OwnedMessage::new(
                Some(b"{}".to_vec()),
                Some(b"tenant".to_vec()),
                "events".into(),
                Timestamp::NotAvailable,
                2,
                7,
                Some(original),
            ),
            Arc::from("events"),
        );
        let letter = Letter {
            reason: Reason::Permanent,
            handler: "h",
            error: "boom",
            attempts: 1,
        };
        let headers = dead_letter_headers(&message, &letter);
        let pairs: Vec<(String, String)> = headers
            .iter()
            .map(|h| {
                (
                    h.key.to_string(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        let get = |k: &str| {
            pairs
                .iter()
                .filter(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("ce_id"), ["e1"]);
        assert_eq!(get(header::ORIGIN_OFFSET), ["7"]);
        assert_eq!(get(header::ORIGIN_PARTITION), ["2"]);
        assert_eq!(get(header::ORIGIN_TOPIC), ["events"]);
        assert_eq!(get(header::REASON), ["permanent"]);
        assert_eq!(truncate("héllo", 2), "h");
    }
}
