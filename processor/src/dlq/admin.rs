//! Operator commands on dead-letter topics: list what is there, replay a selection.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tributary_common::Config;
use tributary_common::envelope::{EventKind, header as ce};
use tributary_common::kafka::{base_client_config, durable_producer_config};
use tributary_common::routing::wildcard_match;

use super::header;

const DELIVERY_TIMEOUT_MS: u64 = 30_000;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("topic `{0}` does not exist")]
    UnknownTopic(String),
    #[error("reading `{topic}` timed out with {missing} partition(s) unread")]
    Timeout { topic: String, missing: usize },
    #[error("the reader task failed: {0}")]
    Reader(String),
}

/// One record of a dead-letter topic, with its origin headers decoded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub origin_topic: Option<String>,
    pub origin_partition: Option<i32>,
    pub origin_offset: Option<i64>,
    pub handler: Option<String>,
    pub error: Option<String>,
    pub attempts: Option<u32>,
    pub reason: Option<String>,
    pub dead_lettered_at: Option<String>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub client_key: Option<String>,
    #[serde(skip)]
    key: Option<Vec<u8>>,
    #[serde(skip)]
    payload: Option<Vec<u8>>,
    /// The event's own headers (CloudEvents attributes), without the runtime's.
    #[serde(skip)]
    event_headers: Vec<(String, Option<Vec<u8>>)>,
}

impl DeadLetter {
    fn from_message<M: Message>(message: &M) -> DeadLetter {
        let mut all: HashMap<String, String> = HashMap::new();
        let mut event_headers = Vec::new();
        if let Some(headers) = message.headers() {
            for h in headers.iter() {
                if let Some(text) = h.value.and_then(|v| std::str::from_utf8(v).ok()) {
                    all.insert(h.key.to_string(), text.to_string());
                }
                if !h.key.starts_with(header::PREFIX) {
                    event_headers.push((h.key.to_string(), h.value.map(<[u8]>::to_vec)));
                }
            }
        }
        let text = |k: &str| all.get(k).cloned();
        let event_type = text(ce::TYPE).map(|t| match EventKind::from_ce_type(&t) {
            Some(kind) => kind.name().to_string(),
            None => t,
        });
        DeadLetter {
            partition: message.partition(),
            offset: message.offset(),
            origin_topic: text(header::ORIGIN_TOPIC),
            origin_partition: text(header::ORIGIN_PARTITION).and_then(|v| v.parse().ok()),
            origin_offset: text(header::ORIGIN_OFFSET).and_then(|v| v.parse().ok()),
            handler: text(header::HANDLER),
            error: text(header::ERROR),
            attempts: text(header::ATTEMPTS).and_then(|v| v.parse().ok()),
            reason: text(header::REASON),
            dead_lettered_at: text(header::DEAD_LETTERED_AT),
            event_id: text(ce::ID),
            event_type,
            client_key: text(ce::CLIENT_KEY),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            event_headers,
        }
    }
}

/// Which dead letters a replay takes; every given criterion must match. An empty
/// selection matches everything.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub event_ids: Vec<String>,
    /// An event name pattern with `*` wildcards.
    pub event_type: Option<String>,
    /// A part of the error text.
    pub error_contains: Option<String>,
    pub reason: Option<String>,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.event_ids.is_empty()
            && self.event_type.is_none()
            && self.error_contains.is_none()
            && self.reason.is_none()
    }

    pub fn matches(&self, letter: &DeadLetter) -> bool {
        let id_ok = self.event_ids.is_empty()
            || letter
                .event_id
                .as_ref()
                .is_some_and(|id| self.event_ids.contains(id));
        let type_ok = self.event_type.as_ref().is_none_or(|pattern| {
            letter
                .event_type
                .as_deref()
                .is_some_and(|t| wildcard_match(pattern, t))
        });
        let error_ok = self.error_contains.as_ref().is_none_or(|part| {
            letter
                .error
                .as_deref()
                .is_some_and(|e| e.contains(part.as_str()))
        });
        let reason_ok = self
            .reason
            .as_ref()
            .is_none_or(|r| letter.reason.as_deref() == Some(r.as_str()));
        id_ok && type_ok && error_ok && reason_ok
    }
}

/// Every record on the dead-letter topic `topic` now, in partition then offset order.
pub async fn list(
    config: &Config,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<DeadLetter>, AdminError> {
    let (config, topic) = (config.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || read_topic(&config, &topic, timeout))
        .await
        .map_err(|e| AdminError::Reader(e.to_string()))?
}

fn read_topic(
    config: &Config,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<DeadLetter>, AdminError> {
    let deadline = Instant::now() + timeout;
    // The reader assigns partitions itself and never commits; librdkafka still wants a
    // group id for that.
    let consumer: BaseConsumer = base_client_config(config)
        .set("group.id", "tributary-dlq-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(AdminError::UnknownTopic(topic.to_string()));
    }
    // Read up to the end as it is now; what arrives meanwhile is for the next listing.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
        if high > low {
            ends.insert(partition, high);
            assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
        }
    }
    let mut letters = Vec::new();
    if ends.is_empty() {
        return Ok(letters);
    }
    consumer.assign(&assignment)?;
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(AdminError::Timeout {
                topic: topic.to_string(),
                missing: ends.len(),
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                if ends
                    .get(&message.partition())
                    .is_some_and(|end| message.offset() + 1 >= *end)
                {
                    ends.remove(&message.partition());
                }
                letters.push(DeadLetter::from_message(&message));
            }
            Some(Err(error)) => tracing::debug!(%error, "dead-letter reader"),
            None => {}
        }
    }
    letters.sort_by_key(|l| (l.partition, l.offset));
    Ok(letters)
}

/// Counts of dead letters by reason, error and event type, largest first.
pub fn summarize(letters: &[DeadLetter]) -> Vec<((String, String, String), usize)> {
    let mut counts: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for letter in letters {
        let key = (
            letter.reason.clone().unwrap_or_else(|| "-".into()),
            letter.error.clone().unwrap_or_else(|| "-".into()),
            letter.event_type.clone().unwrap_or_else(|| "-".into()),
        );
        *counts.entry(key).or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
}

#[derive(Debug, Clone)]
pub struct ReplayReport {
    /// The dead letters the selection took.
    pub selected: Vec<DeadLetter>,
    /// How many were published to their origin topic (0 on a dry run).
    pub replayed: usize,
    /// Selected letters without an origin topic header, left alone.
    pub without_origin: usize,
}

/// Re-publishes the selected dead letters of `topic` to their origin topics, with their
/// original key, body and event headers, in dead-letter order, marked as replayed (so the
/// built-in write helpers look for what an earlier run made before writing). A dry run
/// only selects.
/// Dead letters stay where they are; replaying one twice is harmless, since the handlers
/// that handled it the first time skip it.
pub async fn replay(
    config: &Config,
    topic: &str,
    selection: &Selection,
    dry_run: bool,
    timeout: Duration,
) -> Result<ReplayReport, AdminError> {
    let selected: Vec<DeadLetter> = list(config, topic, timeout)
        .await?
        .into_iter()
        .filter(|l| selection.matches(l))
        .collect();
    let without_origin = selected.iter().filter(|l| l.origin_topic.is_none()).count();
    let mut replayed = 0;
    if !dry_run {
        let producer: FutureProducer =
            durable_producer_config(config, DELIVERY_TIMEOUT_MS).create()?;
        for letter in &selected {
            let Some(origin) = &letter.origin_topic else {
                continue;
            };
            let replayed_at = chrono::Utc::now().to_rfc3339();
            let headers = letter
                .event_headers
                .iter()
                .fold(OwnedHeaders::new(), |headers, (key, value)| {
                    headers.insert(Header {
                        key: key.as_str(),
                        value: value.as_deref(),
                    })
                })
                .insert(Header {
                    key: header::REPLAYED_AT,
                    value: Some(replayed_at.as_str()),
                });
            let mut record = FutureRecord::to(origin).headers(headers);
            if let Some(key) = &letter.key {
                record = record.key(key.as_slice());
            }
            if let Some(payload) = &letter.payload {
                record = record.payload(payload.as_slice());
            }
            producer
                .send(record, Duration::from_millis(DELIVERY_TIMEOUT_MS))
                .await
                .map_err(|(error, _)| error)?;
            replayed += 1;
        }
    }
    Ok(ReplayReport {
        selected,
        replayed,
        without_origin,
    })
}
