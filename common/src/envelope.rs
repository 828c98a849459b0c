//! The event envelope: CloudEvents 1.0 in Kafka binary mode.
//!
//! The record value is the body exactly as received (lifecycle bodies without their shared
//! secret), the key is the tenant's clientKey, and the attributes travel as `ce_*` headers,
//! so any Kafka consumer can read the topics without Tributary's code.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde_json::Value;

use crate::connect::LifecycleEventType;

pub const SPEC_VERSION: &str = "1.0";
pub const WEBHOOK_TYPE_PREFIX: &str = "com.atlassian.confluence.";
pub const LIFECYCLE_TYPE_PREFIX: &str = "com.atlassian.connect.lifecycle.";
/// Forge deliveries: the prefix followed by the Forge event name (`avi:confluence:created:page`).
pub const FORGE_TYPE_PREFIX: &str = "com.atlassian.forge.";
pub const JSON_CONTENT_TYPE: &str = "application/json";

pub mod header {
    pub const SPEC_VERSION: &str = "ce_specversion";
    pub const ID: &str = "ce_id";
    pub const SOURCE: &str = "ce_source";
    pub const TYPE: &str = "ce_type";
    pub const TIME: &str = "ce_time";
    pub const SUBJECT: &str = "ce_subject";
    pub const CLIENT_KEY: &str = "ce_clientkey";
    pub const CONTENT_TYPE: &str = "content-type";
}

/// Which Connect event an envelope carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKind {
    Webhook(String),
    Lifecycle(LifecycleEventType),
    /// A Forge event under its Forge name (`avi:confluence:created:page`).
    Forge(String),
}

impl EventKind {
    /// The short name handlers subscribe to: `page_created`, `installed`, ... A Forge event
    /// is named by its Connect counterpart where there is one, so one handler serves both.
    pub fn name(&self) -> &str {
        match self {
            EventKind::Webhook(name) => name,
            EventKind::Lifecycle(t) => t.as_str(),
            EventKind::Forge(name) => crate::forge::connect_name_of(name).unwrap_or(name),
        }
    }

    /// The Forge event name of a Forge event.
    pub fn forge_name(&self) -> Option<&str> {
        match self {
            EventKind::Forge(name) => Some(name),
            _ => None,
        }
    }

    pub fn ce_type(&self) -> String {
        match self {
            EventKind::Webhook(name) => format!("{WEBHOOK_TYPE_PREFIX}{name}"),
            EventKind::Lifecycle(t) => format!("{LIFECYCLE_TYPE_PREFIX}{}", t.as_str()),
            EventKind::Forge(name) => format!("{FORGE_TYPE_PREFIX}{name}"),
        }
    }

    pub fn from_ce_type(ce_type: &str) -> Option<Self> {
        if let Some(name) = ce_type.strip_prefix(WEBHOOK_TYPE_PREFIX) {
            (!name.is_empty()).then(|| EventKind::Webhook(name.to_string()))
        } else if let Some(name) = ce_type.strip_prefix(FORGE_TYPE_PREFIX) {
            name.starts_with("avi:")
                .then(|| EventKind::Forge(name.to_string()))
        } else {
            ce_type
                .strip_prefix(LIFECYCLE_TYPE_PREFIX)
                .and_then(LifecycleEventType::parse)
                .map(EventKind::Lifecycle)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: String,
    /// The tenant's base URL.
    pub source: String,
    pub kind: EventKind,
    pub time: DateTime<Utc>,
    /// The content id (or space key) the event is about, where there is one.
    pub subject: Option<String>,
    pub client_key: String,
    pub content_type: String,
    pub data: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("header `{0}` is missing")]
    MissingHeader(&'static str),
    #[error("header `{0}` is not valid UTF-8 or has a bad value")]
    BadHeader(&'static str),
    #[error("unsupported CloudEvents spec version `{0}`")]
    SpecVersion(String),
    #[error("record key does not match ce_clientkey")]
    KeyMismatch,
    #[error("record has no value")]
    NoData,
}

impl Envelope {
    /// A new envelope with a fresh time-ordered id.
    pub fn new(kind: EventKind, client_key: &str, source: &str, data: Bytes) -> Self {
        Envelope {
            id: uuid::Uuid::now_v7().to_string(),
            source: source.to_string(),
            kind,
            // Millisecond precision is what the ce_time header carries.
            time: Utc::now().trunc_subsecs(3),
            subject: None,
            client_key: client_key.to_string(),
            content_type: JSON_CONTENT_TYPE.to_string(),
            data,
        }
    }

    pub fn with_subject(mut self, subject: Option<String>) -> Self {
        self.subject = subject;
        self
    }

    /// The Kafka record key.
    pub fn key(&self) -> &str {
        &self.client_key
    }

    /// The record headers, in a stable order.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            (header::SPEC_VERSION, SPEC_VERSION.to_string()),
            (header::ID, self.id.clone()),
            (header::SOURCE, self.source.clone()),
            (header::TYPE, self.kind.ce_type()),
            (
                header::TIME,
                self.time.to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
        ];
        if let Some(subject) = &self.subject {
            headers.push((header::SUBJECT, subject.clone()));
        }
        headers.push((header::CLIENT_KEY, self.client_key.clone()));
        headers.push((header::CONTENT_TYPE, self.content_type.clone()));
        headers
    }

    /// Rebuilds an envelope from a record's key, headers and value.
    pub fn decode<'a>(
        key: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
        value: Option<&[u8]>,
    ) -> Result<Self, EnvelopeError> {
        let mut found: [Option<String>; 8] = Default::default();
        const NAMES: [&str; 8] = [
            header::SPEC_VERSION,
            header::ID,
            header::SOURCE,
            header::TYPE,
            header::TIME,
            header::SUBJECT,
            header::CLIENT_KEY,
            header::CONTENT_TYPE,
        ];
        for (name, value) in headers {
            if let Some(i) = NAMES.iter().position(|n| *n == name) {
                let text = value
                    .map(|v| std::str::from_utf8(v).map(str::to_string))
                    .transpose()
                    .map_err(|_| EnvelopeError::BadHeader(NAMES[i]))?;
                found[i] = text;
            }
        }
        let [
            spec,
            id,
            source,
            ce_type,
            time,
            subject,
            client_key,
            content_type,
        ] = found;
        let spec = spec.ok_or(EnvelopeError::MissingHeader(header::SPEC_VERSION))?;
        if spec != SPEC_VERSION {
            return Err(EnvelopeError::SpecVersion(spec));
        }
        let id = id
            .filter(|s| !s.is_empty())
            .ok_or(EnvelopeError::MissingHeader(header::ID))?;
        let kind = ce_type
            .ok_or(EnvelopeError::MissingHeader(header::TYPE))
            .and_then(|t| {
                EventKind::from_ce_type(&t).ok_or(EnvelopeError::BadHeader(header::TYPE))
            })?;
        let time = time
            .ok_or(EnvelopeError::MissingHeader(header::TIME))
            .and_then(|t| {
                DateTime::parse_from_rfc3339(&t)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| EnvelopeError::BadHeader(header::TIME))
            })?;
        let client_key = client_key
            .filter(|s| !s.is_empty())
            .ok_or(EnvelopeError::MissingHeader(header::CLIENT_KEY))?;
        if let Some(key) = key
            && key != client_key.as_bytes()
        {
            return Err(EnvelopeError::KeyMismatch);
        }
        Ok(Envelope {
            id,
            source: source.ok_or(EnvelopeError::MissingHeader(header::SOURCE))?,
            kind,
            time,
            subject,
            client_key,
            content_type: content_type.unwrap_or_else(|| JSON_CONTENT_TYPE.to_string()),
            data: Bytes::copy_from_slice(value.ok_or(EnvelopeError::NoData)?),
        })
    }
}

/// The CloudEvents subject for a webhook body: the id of the content it is about, or the
/// key of the space.
pub fn subject_of(body: &Value) -> Option<String> {
    for entity in ["page", "blog", "comment", "attachment", "content"] {
        if let Some(obj) = body.get(entity) {
            if let Some(id) = obj.get("idAsString").and_then(Value::as_str) {
                return Some(id.to_string());
            }
            match obj.get("id") {
                Some(Value::String(id)) => return Some(id.clone()),
                Some(Value::Number(id)) => return Some(id.to_string()),
                _ => {}
            }
        }
    }
    body.get("space")
        .and_then(|s| s.get("key"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_body_bytes() {
        let body = Bytes::from_static(b"{ \"page\" : {\"id\": 42}}  ");
        let envelope = Envelope::new(
            EventKind::Webhook("page_created".into()),
            "tenant-1",
            "https://acme.atlassian.net/wiki",
            body.clone(),
        )
        .with_subject(Some("42".into()));
        let headers = envelope.headers();
        let decoded = Envelope::decode(
            Some(b"tenant-1"),
            headers.iter().map(|(k, v)| (*k, Some(v.as_bytes()))),
            Some(&body),
        )
        .expect("decodes");
        assert_eq!(decoded.data, body);
        assert_eq!(decoded.kind, envelope.kind);
        assert_eq!(decoded.id, envelope.id);
        assert_eq!(decoded.subject.as_deref(), Some("42"));
        assert_eq!(
            decoded.time.timestamp_millis(),
            envelope.time.timestamp_millis()
        );
        assert!(
            headers
                .iter()
                .any(|(k, v)| *k == "ce_type" && v == "com.atlassian.confluence.page_created")
        );
    }

    #[test]
    fn lifecycle_types_round_trip() {
        let kind = EventKind::Lifecycle(LifecycleEventType::Uninstalled);
        assert_eq!(
            kind.ce_type(),
            "com.atlassian.connect.lifecycle.uninstalled"
        );
        assert_eq!(EventKind::from_ce_type(&kind.ce_type()), Some(kind));
        assert_eq!(
            EventKind::from_ce_type("com.atlassian.connect.lifecycle.exploded"),
            None
        );
    }

    #[test]
    fn forge_types_round_trip_and_take_connect_names() {
        let kind = EventKind::Forge("avi:confluence:created:page".into());
        assert_eq!(
            kind.ce_type(),
            "com.atlassian.forge.avi:confluence:created:page"
        );
        assert_eq!(EventKind::from_ce_type(&kind.ce_type()), Some(kind.clone()));
        assert_eq!(kind.name(), "page_created");
        assert_eq!(kind.forge_name(), Some("avi:confluence:created:page"));
        let liked = EventKind::Forge("avi:confluence:liked:page".into());
        assert_eq!(liked.name(), "avi:confluence:liked:page");
        assert_eq!(
            EventKind::from_ce_type("com.atlassian.forge.page_created"),
            None
        );
    }

    #[test]
    fn undecodable_records_are_errors() {
        assert_eq!(
            Envelope::decode(None, std::iter::empty(), Some(b"{}")),
            Err(EnvelopeError::MissingHeader("ce_specversion"))
        );
    }

    #[test]
    fn subjects_from_bodies() {
        assert_eq!(
            subject_of(&serde_json::json!({"page": {"id": 7}})).as_deref(),
            Some("7")
        );
        assert_eq!(
            subject_of(&serde_json::json!({"comment": {"idAsString": "9", "id": 9}})).as_deref(),
            Some("9")
        );
        assert_eq!(
            subject_of(&serde_json::json!({"space": {"key": "DEV"}})).as_deref(),
            Some("DEV")
        );
        assert_eq!(subject_of(&serde_json::json!({"user": {}})), None);
    }
}
