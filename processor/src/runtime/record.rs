//! A consumed Kafka record as the runtime keeps it from the consumer to the commit.
//!
//! librdkafka's own owned copy (`BorrowedMessage::detach`) copies every header into a
//! header list of its own, an allocation per header, and reading one back goes through the
//! C library again. A record keeps its headers in one buffer instead, its payload in shared
//! bytes (so the event's envelope holds the same bytes rather than a copy), and the topic
//! name shared by every record of the topic.

use std::sync::Arc;

use bytes::Bytes;
use rdkafka::Message;
use rdkafka::Timestamp;
use rdkafka::message::{Header, Headers};

#[derive(Debug, Clone)]
pub(crate) struct Record {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    timestamp: Timestamp,
    key: Option<Vec<u8>>,
    payload: Option<Bytes>,
    headers: Option<RecordHeaders>,
}

impl Record {
    pub fn new(
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        timestamp: Timestamp,
        key: Option<Vec<u8>>,
        payload: Option<Bytes>,
        headers: Option<RecordHeaders>,
    ) -> Record {
        Record {
            topic,
            partition,
            offset,
            timestamp,
            key,
            payload,
            headers,
        }
    }

    /// An owned copy of `message`, whose topic is `topic` (the caller's shared name).
    pub fn copied(message: &impl Message, topic: Arc<str>) -> Record {
        Record {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(Bytes::copy_from_slice),
            headers: message.headers().map(RecordHeaders::copied),
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic's name, shared.
    pub fn topic_name(&self) -> &Arc<str> {
        &self.topic
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    pub fn offset(&self) -> i64 {
        self.offset
    }

    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }

    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    pub fn payload(&self) -> Option<&[u8]> {
        self.payload.as_deref()
    }

    /// The payload itself, shared rather than copied.
    pub fn payload_bytes(&self) -> Option<Bytes> {
        self.payload.clone()
    }

    pub fn headers(&self) -> Option<&RecordHeaders> {
        self.headers.as_ref()
    }
}

/// Where one header lies: its name ends at `name_end` in [`RecordHeaders::names`], its value
/// at `value_end` in [`RecordHeaders::values`]; each starts where the header before it
/// ended. A header without a value (which Kafka tells apart from an empty one) has
/// `has_value` false and takes no bytes.
#[derive(Debug, Clone, Copy)]
struct Span {
    name_end: u32,
    value_end: u32,
    has_value: bool,
}

/// Room for a record's headers before any growing: the envelope's eight headers take about
/// 250 bytes.
const NAMES_CAPACITY: usize = 128;
const VALUES_CAPACITY: usize = 384;

/// A record's headers, in order: the names back to back in one string (read back with no
/// UTF-8 check), the values in one buffer.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordHeaders {
    names: String,
    values: Vec<u8>,
    spans: Vec<Span>,
}

impl RecordHeaders {
    /// Copies `headers`. A header list longer than `u32::MAX` bytes cannot come out of a
    /// Kafka record (its size is an int32), so offsets fit.
    pub fn copied(headers: &impl Headers) -> RecordHeaders {
        let mut all = RecordHeaders {
            names: String::with_capacity(NAMES_CAPACITY),
            values: Vec::with_capacity(VALUES_CAPACITY),
            spans: Vec::with_capacity(headers.count()),
        };
        for header in headers.iter() {
            all.push(header.key, header.value);
        }
        all
    }

    /// Adds a header at the end.
    pub fn push(&mut self, name: &str, value: Option<&[u8]>) {
        self.names.push_str(name);
        if let Some(value) = value {
            self.values.extend_from_slice(value);
        }
        self.spans.push(Span {
            name_end: offset_of(self.names.len()),
            value_end: offset_of(self.values.len()),
            has_value: value.is_some(),
        });
    }
}

fn offset_of(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

impl Headers for RecordHeaders {
    fn count(&self) -> usize {
        self.spans.len()
    }

    fn try_get(&self, idx: usize) -> Option<Header<'_, &[u8]>> {
        let span = self.spans.get(idx)?;
        let (name_start, value_start) = match idx.checked_sub(1).and_then(|i| self.spans.get(i)) {
            Some(before) => (before.name_end as usize, before.value_end as usize),
            None => (0, 0),
        };
        let key = self.names.get(name_start..span.name_end as usize)?;
        let value = if span.has_value {
            Some(self.values.get(value_start..span.value_end as usize)?)
        } else {
            None
        };
        Some(Header { key, value })
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{OwnedHeaders, OwnedMessage};

    use super::*;

    #[test]
    fn a_copied_record_reads_as_the_message_it_copies() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "ce_id",
                value: Some("e1"),
            })
            .insert(Header {
                key: "empty",
                value: Some(""),
            })
            .insert(Header::<&str> {
                key: "absent",
                value: None,
            })
            .insert(Header {
                key: "ce_type",
                value: Some("com.atlassian.confluence.webhook.page_created"),
            })
            .insert(Header {
                key: "ce_id",
                value: Some("repeated names stay in order"),
            });
        let message = OwnedMessage::new(
            Some(b"{\"page\":{}}".to_vec()),
            Some(b"tenant-a".to_vec()),
            "events".into(),
            Timestamp::CreateTime(1_700_000_000_000),
            3,
            42,
            Some(headers),
        );
        let record = Record::copied(&message, Arc::from("events"));
        assert_eq!(record.topic(), message.topic());
        assert_eq!(record.partition(), 3);
        assert_eq!(record.offset(), 42);
        assert_eq!(record.timestamp(), message.timestamp());
        assert_eq!(record.key(), message.key());
        assert_eq!(record.payload(), message.payload());
        let expected: Vec<(String, Option<Vec<u8>>)> = message
            .headers()
            .expect("headers")
            .iter()
            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
            .collect();
        let copied = record.headers().expect("headers");
        let got: Vec<(String, Option<Vec<u8>>)> = copied
            .iter()
            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(got[1].1.as_deref(), Some(&b""[..]), "empty is not absent");
        assert_eq!(got[2].1, None);
        assert!(copied.try_get(5).is_none());

        let bare = OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, 0, None);
        let record = Record::copied(&bare, Arc::from("t"));
        assert!(record.headers().is_none());
        assert!(record.payload().is_none() && record.key().is_none());
    }
}
