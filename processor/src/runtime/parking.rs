//! Parked events, as the dispatcher sees them: an event whose retry is due later than a
//! worker should wait is written to the database with its record (`ParkedStore`), its
//! offset committed, and run again once due by whichever processor holds its partition.
//!
//! Order per tenant holds: while a key has parked events, its new records are parked behind
//! them (due at once, run in offset order after the first). The dispatcher keeps only counts
//! per key in memory, never the records; a partition's new holder reads them from the
//! database before it dispatches anything of the partition.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rdkafka::Timestamp;
use rdkafka::message::Headers;
use tokio::time::Instant;
use tributary_common::store::{ParkedEvent, ParkedKey};

use super::execute::{Resume, Shared};
use super::record::{Record, RecordHeaders};

/// What a parked event's retry looks like when it is parked.
pub(crate) struct Retry<'a> {
    pub handler: &'a str,
    pub attempts: u32,
    pub retries_used: u32,
    pub delay: Duration,
    pub error: &'a str,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn record(message: &Record) -> ParkedEvent {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    let key = message.key().unwrap_or_default().to_vec();
    ParkedEvent {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        client_key: String::from_utf8_lossy(&key).into_owned(),
        key,
        payload: message.payload().map(<[u8]>::to_vec),
        headers,
        timestamp_ms: message.timestamp().to_millis(),
        resume_handler: None,
        retries_used: 0,
        due_at_ms: now_ms(),
        last_error: String::new(),
        parked_at_ms: now_ms(),
    }
}

/// The parked form of `message`, whose handler `retry.handler` runs again once due.
pub(crate) fn parked_event(message: &Record, client_key: &str, retry: &Retry<'_>) -> ParkedEvent {
    let mut parked = record(message);
    parked.client_key = client_key.to_string();
    parked.resume_handler = Some(retry.handler.to_string());
    parked.retries_used = retry.retries_used.max(retry.attempts.saturating_sub(1));
    parked.due_at_ms = now_ms().saturating_add(millis(retry.delay));
    parked.last_error = retry.error.to_string();
    parked
}

/// The parked form of a record that waits behind an earlier parked event of its key.
pub(crate) fn behind(message: &Record) -> ParkedEvent {
    let mut parked = record(message);
    parked.last_error = "waiting behind an earlier parked event of its tenant".into();
    parked
}

/// The Kafka record a parked event was parked from.
pub(crate) fn message_of(event: &ParkedEvent) -> Record {
    let mut headers = RecordHeaders::default();
    for (name, value) in &event.headers {
        headers.push(name, Some(value));
    }
    Record::new(
        Arc::from(event.topic.as_str()),
        event.partition,
        event.offset,
        event
            .timestamp_ms
            .map_or(Timestamp::NotAvailable, Timestamp::CreateTime),
        Some(event.key.clone()),
        event.payload.clone().map(Bytes::from),
        Some(headers),
    )
}

/// Where a parked event continues: at the handler it was parked for, its wait over. A
/// handler no longer registered restarts the event from the first (handlers that had
/// handled it skip it by their records).
pub(crate) fn resume_of(shared: &Shared, event: &ParkedEvent) -> Option<Resume> {
    let name = event.resume_handler.as_deref()?;
    let subscription = shared.subscriptions.iter().position(|s| s.name == name)?;
    Some(Resume {
        subscription,
        attempts: event.retries_used,
        retries_used: event.retries_used,
        asked_wait: None,
        error: None,
    })
}

/// One key's parked events, as counts.
#[derive(Debug)]
pub(crate) struct ParkedKeyState {
    /// Parked events of the key in the database.
    pub rows: usize,
    /// Records of the key being parked behind them now.
    pub inserting: usize,
    /// Its first parked event is running.
    pub running: bool,
    /// When its first parked event is due.
    pub due: Instant,
}

impl ParkedKeyState {
    pub fn is_done(&self) -> bool {
        self.rows == 0 && self.inserting == 0 && !self.running
    }
}

/// A partition's parked keys, for the assignment generation they were read in.
pub(crate) enum PartitionParking {
    /// Being read from the database; nothing of the partition is dispatched until then.
    Loading { generation: u64 },
    Loaded {
        generation: u64,
        keys: HashMap<Vec<u8>, ParkedKeyState>,
    },
}

impl PartitionParking {
    pub fn generation(&self) -> u64 {
        match self {
            PartitionParking::Loading { generation }
            | PartitionParking::Loaded { generation, .. } => *generation,
        }
    }

    pub fn loaded(generation: u64, keys: Vec<ParkedKey>) -> PartitionParking {
        let now_ms = now_ms();
        let keys = keys
            .into_iter()
            .map(|k| {
                let wait = u64::try_from(k.head_due_at_ms.saturating_sub(now_ms)).unwrap_or(0);
                (
                    k.key,
                    ParkedKeyState {
                        rows: usize::try_from(k.events).unwrap_or(usize::MAX),
                        inserting: 0,
                        running: false,
                        due: Instant::now() + Duration::from_millis(wait),
                    },
                )
            })
            .collect();
        PartitionParking::Loaded { generation, keys }
    }

    pub fn keys_mut(&mut self) -> Option<&mut HashMap<Vec<u8>, ParkedKeyState>> {
        match self {
            PartitionParking::Loaded { keys, .. } => Some(keys),
            PartitionParking::Loading { .. } => None,
        }
    }
}

/// Turns a due time in Unix milliseconds into an instant of this process's clock.
pub(crate) fn instant_of(due_at_ms: i64) -> Instant {
    let wait = u64::try_from(due_at_ms.saturating_sub(now_ms())).unwrap_or(0);
    Instant::now() + Duration::from_millis(wait)
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};

    use super::*;

    #[test]
    fn a_parked_record_comes_back_as_it_was() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "ce_id",
                value: Some("e-1"),
            })
            .insert(Header {
                key: "ce_type",
                value: Some("com.atlassian.confluence.page_created"),
            });
        let message = Record::copied(
            &OwnedMessage::new(
                Some(b"{\"page\":{}}".to_vec()),
                Some(b"tenant-a".to_vec()),
                "events".into(),
                Timestamp::CreateTime(1_700_000_000_000),
                3,
                42,
                Some(headers),
            ),
            Arc::from("events"),
        );
        let retry = Retry {
            handler: "pages",
            attempts: 2,
            retries_used: 1,
            delay: Duration::from_secs(300),
            error: "429",
        };
        let parked = parked_event(&message, "tenant-a", &retry);
        assert!(parked.due_at_ms >= now_ms() + 299_000);
        assert_eq!(parked.resume_handler.as_deref(), Some("pages"));
        let back = message_of(&parked);
        assert_eq!(back.payload(), message.payload());
        assert_eq!(back.key(), message.key());
        assert_eq!(
            (back.topic(), back.partition(), back.offset()),
            ("events", 3, 42)
        );
        assert_eq!(back.timestamp(), message.timestamp());
        let names: Vec<(String, Vec<u8>)> = back
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            names,
            vec![
                ("ce_id".to_string(), b"e-1".to_vec()),
                (
                    "ce_type".to_string(),
                    b"com.atlassian.confluence.page_created".to_vec()
                )
            ]
        );
        assert_eq!(behind(&message).resume_handler, None);
    }
}
