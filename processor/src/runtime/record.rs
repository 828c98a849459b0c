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

/// Where one header lies in [`RecordHeaders::bytes`]: its name, then its value (`None`
/// for a header without one, which Kafka tells apart from an empty value).
#[derive(Debug, Clone, Copy)]
struct Span {
    name_end: u32,
    value_end: Option<u32>,
}

/// A record's headers, in order, names and values back to back in one buffer.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordHeaders {
    bytes: Vec<u8>,
    spans: Vec<Span>,
}

impl RecordHeaders {
    /// Copies `headers`. A header list longer than `u32::MAX` bytes cannot come out of a
    /// Kafka record (its size is an int32), so offsets fit.
    pub fn copied(headers: &impl Headers) -> RecordHeaders {
        let mut all = RecordHeaders {
            bytes: Vec::new(),
            spans: Vec::with_capacity(headers.count()),
        };
        for header in headers.iter() {
            all.push(header.key, header.value);
        }
        all
    }

    /// Adds a header at the end.
    pub fn push(&mut self, name: &str, value: Option<&[u8]>) {
        self.bytes.extend_from_slice(name.as_bytes());
        let name_end = offset_of(self.bytes.len());
        let value_end = value.map(|value| {
            self.bytes.extend_from_slice(value);
            offset_of(self.bytes.len())
        });
        self.spans.push(Span {
            name_end,
            value_end,
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
        let start = match idx.checked_sub(1).and_then(|before| self.spans.get(before)) {
            Some(before) => before.value_end.unwrap_or(before.name_end),
            None => 0,
        } as usize;
        let name_end = span.name_end as usize;
        let key = std::str::from_utf8(self.bytes.get(start..name_end)?).ok()?;
        let value = match span.value_end {
            Some(end) => Some(self.bytes.get(name_end..end as usize)?),
            None => None,
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
