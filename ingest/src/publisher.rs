//! Publishing envelopes to Kafka and waiting, within a bound, for the broker's acknowledgement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Histogram};
use rdkafka::error::KafkaError;
use tributary_common::Config;
use tributary_common::envelope::Envelope;
use tributary_common::kafka::{durable_producer_config, envelope_headers};

use crate::delivery::{ProducerSetupError, ReportingProducer};
use crate::kafka_log::RateLimitedLog;
use crate::observe::{self, Lazy};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker did not acknowledge within {0:?}")]
    Timeout(Duration),
    #[error("the broker refused the record: {0}")]
    Kafka(#[from] KafkaError),
}

/// A durable producer (`acks=all`, idempotent) whose sends wait at most `timeout`.
#[derive(Clone)]
pub struct Publisher {
    producer: ReportingProducer<RateLimitedLog>,
    timeout: Duration,
    metrics: Arc<PublishMetrics>,
}

/// Handles kept rather than looked up per record; the event names are the bounded set of
/// routed events.
#[derive(Default)]
struct PublishMetrics {
    broker_ack: Lazy<Histogram>,
    published: Mutex<HashMap<String, Counter>>,
}

impl PublishMetrics {
    fn published(&self, event: &str) {
        let Ok(mut published) = self.published.lock() else {
            return;
        };
        match published.get(event) {
            Some(counter) => counter.increment(1),
            None => {
                let counter = metrics::counter!(observe::EVENTS_PUBLISHED_TOTAL, "event" => event.to_string());
                counter.increment(1);
                published.insert(event.to_string(), counter);
            }
        }
    }
}

impl Publisher {
    /// Creates the producer; its delivery reports are served on the current Tokio runtime.
    pub fn new(config: &Config) -> Result<Self, ProducerSetupError> {
        let client = durable_producer_config(config, config.ingest_publish_timeout_ms);
        Ok(Publisher {
            producer: ReportingProducer::create(&client, RateLimitedLog::default())?,
            timeout: Duration::from_millis(config.ingest_publish_timeout_ms),
            metrics: Arc::default(),
        })
    }

    /// Sends `envelope` to `topic` and returns once the broker has acknowledged it, waiting
    /// at most `limit` and never longer than the configured timeout (a route with a deadline
    /// of its own passes the time it has left). A full local queue fails at once rather than
    /// waiting, so overload turns into 503s.
    pub async fn publish_within(
        &self,
        topic: &str,
        envelope: &Envelope,
        limit: Duration,
    ) -> Result<(), PublishError> {
        let timeout = limit.min(self.timeout);
        // One clock read serves the deadline and the acknowledgement's duration.
        let started = tokio::time::Instant::now();
        let delivery = self.producer.send(
            topic,
            envelope.key(),
            envelope.data.as_ref(),
            envelope_headers(envelope),
        )?;
        let sent = tokio::time::timeout_at(started + timeout, delivery).await;
        self.metrics
            .broker_ack
            .get(|| metrics::histogram!(observe::BROKER_ACK_DURATION_SECONDS))
            .record(started.elapsed().as_secs_f64());
        match sent {
            Err(_) => Err(PublishError::Timeout(timeout)),
            // The report's sender is only dropped unsent when the producer itself is.
            Ok(Err(_)) => Err(PublishError::Kafka(KafkaError::Canceled)),
            Ok(Ok(Err(err))) => Err(PublishError::Kafka(err)),
            Ok(Ok(Ok(()))) => {
                self.metrics.published(envelope.kind.name());
                Ok(())
            }
        }
    }

    /// True when the cluster answers a metadata request within `timeout`.
    pub async fn broker_reachable(&self, timeout: Duration) -> bool {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, timeout).is_ok())
            .await
            .unwrap_or(false)
    }

    /// Waits up to `timeout` for every queued record to be delivered.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
    }
}
