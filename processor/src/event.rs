//! One consumed event as handlers see it: metadata, raw body and typed entities.

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tributary_common::connect::LifecycleEventType;
use tributary_common::envelope::{Envelope, EventKind, read_object_subject};
use tributary_common::json_check::surely_json;

use crate::forge_payload;
use crate::handler::HandlerError;
use crate::payload::{Attachment, Comment, Content, Label, Space, User};

/// Which platform delivered an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    /// A Connect webhook or lifecycle callback.
    Connect,
    /// A Forge Remote delivery (product or lifecycle event).
    Forge,
}

/// Where in Kafka an event was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Shared by every event of the topic.
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone)]
pub struct Event {
    envelope: Envelope,
    /// The body as a tree, built on first use: the runtime itself needs only the envelope,
    /// and many handlers never read the body.
    json: OnceLock<Value>,
    origin: Origin,
    replayed: bool,
}

impl Event {
    /// The event of a decoded envelope; fails when its body is not JSON.
    pub fn new(envelope: Envelope, origin: Origin) -> Result<Event, serde_json::Error> {
        // Checked now, as a `Value` parse would check it, so a body that is not JSON is
        // still refused here rather than failing a handler later: by the quick check when
        // it can tell, otherwise by the exact one, whose error is the one reported.
        if !surely_json(&envelope.data) {
            read_object_subject(&envelope.data)?;
        }
        Ok(Event {
            envelope,
            json: OnceLock::new(),
            origin,
            replayed: false,
        })
    }

    /// The same event, marked as published again from the dead-letter topic.
    pub(crate) fn replayed(mut self, replayed: bool) -> Event {
        self.replayed = replayed;
        self
    }

    /// True for an event `tributary dlq replay` published again: its handlers may have made
    /// part of their effects before it was dead-lettered, so the built-in write helpers look
    /// for them before writing.
    pub fn is_replay(&self) -> bool {
        self.replayed
    }

    /// The unique event id (`ce_id`); handled-event records are keyed by it.
    pub fn id(&self) -> &str {
        &self.envelope.id
    }

    /// The name handlers subscribe to: `page_created`, `installed`, ...
    pub fn name(&self) -> &str {
        self.envelope.kind.name()
    }

    pub fn kind(&self) -> &EventKind {
        &self.envelope.kind
    }

    /// The lifecycle callback this event is, if it is one.
    pub fn lifecycle(&self) -> Option<LifecycleEventType> {
        match self.envelope.kind {
            EventKind::Lifecycle(t) => Some(t),
            EventKind::Webhook(_) | EventKind::Forge(_) => None,
        }
    }

    /// Connect or Forge.
    pub fn source(&self) -> EventSource {
        match self.envelope.kind {
            EventKind::Forge(_) => EventSource::Forge,
            EventKind::Webhook(_) | EventKind::Lifecycle(_) => EventSource::Connect,
        }
    }

    /// The Forge event name (`avi:confluence:created:page`) of a Forge event.
    pub fn forge_name(&self) -> Option<&str> {
        self.envelope.kind.forge_name()
    }

    pub fn client_key(&self) -> &str {
        &self.envelope.client_key
    }

    /// The tenant's base URL as the event carried it (`ce_source`).
    pub fn base_url(&self) -> &str {
        &self.envelope.source
    }

    pub fn time(&self) -> DateTime<Utc> {
        self.envelope.time
    }

    /// The content id or space key the event is about, where there is one.
    pub fn subject(&self) -> Option<&str> {
        self.envelope.subject.as_deref()
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The body exactly as Confluence sent it (lifecycle bodies without their secret).
    pub fn raw(&self) -> &[u8] {
        &self.envelope.data
    }

    pub fn json(&self) -> &Value {
        // `new` checked the body with the same parser, so this parse does not fail; were it
        // to, the handler sees `null` rather than the runtime panicking.
        self.json
            .get_or_init(|| serde_json::from_slice(&self.envelope.data).unwrap_or(Value::Null))
    }

    /// The body as a type of the handler's own; a mismatch is a permanent failure.
    pub fn body<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        T::deserialize(self.json()).map_err(HandlerError::permanent)
    }

    /// The acting user (`userAccountId`; Forge's `atlassianId`).
    pub fn user_account_id(&self) -> Option<&str> {
        let field = match self.source() {
            EventSource::Connect => "userAccountId",
            EventSource::Forge => "atlassianId",
        };
        self.json().get(field).and_then(Value::as_str)
    }

    /// When Confluence says it happened, epoch milliseconds.
    pub fn timestamp_millis(&self) -> Option<i64> {
        self.json().get("timestamp").and_then(Value::as_i64)
    }

    /// The page: Connect's `page`, or Forge's `content` when it is a page.
    pub fn page(&self) -> Option<Content> {
        match self.source() {
            EventSource::Connect => self.entity("page"),
            EventSource::Forge => forge_payload::content(self.json(), Some("page")),
        }
    }

    /// The blog post: Connect's `blog`, or Forge's `content` when it is a blog post.
    pub fn blog(&self) -> Option<Content> {
        match self.source() {
            EventSource::Connect => self.entity("blog"),
            EventSource::Forge => forge_payload::content(self.json(), Some("blogpost")),
        }
    }

    pub fn content(&self) -> Option<Content> {
        match self.source() {
            EventSource::Connect => self.entity("content"),
            EventSource::Forge => forge_payload::content(self.json(), None),
        }
    }

    pub fn comment(&self) -> Option<Comment> {
        self.entity("comment")
    }

    pub fn attachment(&self) -> Option<Attachment> {
        self.entity("attachment")
    }

    /// The space: Connect's `space`, or the space of Forge's `content`.
    pub fn space(&self) -> Option<Space> {
        match self.source() {
            EventSource::Connect => self.entity("space"),
            EventSource::Forge => forge_payload::space(self.json()),
        }
    }

    pub fn label(&self) -> Option<Label> {
        self.entity("label")
    }

    pub fn user(&self) -> Option<User> {
        self.entity("user")
    }

    fn entity<T: DeserializeOwned>(&self, field: &str) -> Option<T> {
        self.json().get(field).and_then(|v| T::deserialize(v).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn typed_entities_and_raw_json() {
        let body = br#"{"userAccountId":"u1","timestamp":1700000000000,
            "page":{"id":12,"title":"Hello","spaceKey":"DEV"}}"#;
        let envelope = Envelope::new(
            EventKind::Webhook("page_created".into()),
            "tenant-1",
            "https://acme.atlassian.net/wiki",
            bytes::Bytes::from_static(body),
        );
        let event = Event::new(
            envelope,
            Origin {
                topic: "t".into(),
                partition: 0,
                offset: 3,
            },
        )
        .expect("json body");
        assert_eq!(event.name(), "page_created");
        assert_eq!(event.user_account_id(), Some("u1"));
        let page = event.page().expect("page");
        assert_eq!(page.id.as_deref(), Some("12"));
        assert_eq!(page.title.as_deref(), Some("Hello"));
        assert!(event.blog().is_none());
        assert_eq!(event.json()["page"]["spaceKey"], "DEV");
        assert_eq!(event.lifecycle(), None);
    }

    #[test]
    fn forge_bodies_read_through_the_same_accessors() {
        let body = serde_json::json!({
            "eventType": "avi:confluence:created:page",
            "atlassianId": "557058:forge",
            "content": {
                "id": "98", "type": "page", "status": "current", "title": "From Forge",
                "space": {"id": 7, "key": "DEV", "name": "Development"},
                "history": {"createdBy": {"accountId": "557058:author"}, "createdDate": "2026-12-01T10:00:00.000Z"},
                "version": {"number": 3}
            }
        });
        let envelope = Envelope::new(
            EventKind::Forge("avi:confluence:created:page".into()),
            "ari:cloud:confluence::site/c1",
            "https://api.atlassian.com/ex/confluence/c1",
            bytes::Bytes::from(body.to_string()),
        );
        let event = Event::new(envelope, origin()).expect("json body");
        assert_eq!(event.source(), EventSource::Forge);
        assert_eq!(event.name(), "page_created");
        assert_eq!(event.forge_name(), Some("avi:confluence:created:page"));
        assert_eq!(event.user_account_id(), Some("557058:forge"));
        let page = event.page().expect("page");
        assert_eq!(page.id.as_deref(), Some("98"));
        assert_eq!(page.title.as_deref(), Some("From Forge"));
        assert_eq!(page.space_key.as_deref(), Some("DEV"));
        assert_eq!(page.space_id.as_deref(), Some("7"));
        assert_eq!(page.creator_account_id.as_deref(), Some("557058:author"));
        assert_eq!(page.version, Some(3));
        assert!(page.creation_date.is_some());
        assert!(event.blog().is_none(), "a page is not a blog post");
        assert_eq!(event.content().map(|c| c.id), Some(Some("98".into())));
        assert_eq!(event.space().and_then(|s| s.key).as_deref(), Some("DEV"));
        assert_eq!(event.lifecycle(), None);

        let connect = Event::new(
            Envelope::new(
                EventKind::Webhook("page_created".into()),
                "tenant-1",
                "https://acme.atlassian.net/wiki",
                bytes::Bytes::from_static(br#"{"page":{"id":1}}"#),
            ),
            origin(),
        )
        .expect("json");
        assert_eq!(connect.source(), EventSource::Connect);
        assert_eq!(connect.forge_name(), None);
    }

    #[test]
    fn a_body_that_is_not_json_is_refused_when_decoded_not_when_read() {
        let bodies: [&[u8]; 4] = [
            b"{\"page\": ",
            b"not json",
            b"{\"a\": \"\\ud800\"}",
            b"1e400",
        ];
        for body in bodies {
            let envelope = Envelope::new(
                EventKind::Webhook("page_created".into()),
                "tenant-1",
                "https://acme.atlassian.net/wiki",
                bytes::Bytes::copy_from_slice(body),
            );
            let expected = serde_json::from_slice::<Value>(body).expect_err("not JSON");
            let refused = Event::new(envelope, origin()).expect_err("refused");
            assert_eq!(refused.to_string(), expected.to_string());
        }
    }

    fn read_everything(event: &Event) {
        let _ = (
            event.user_account_id(),
            event.timestamp_millis(),
            event.subject(),
        );
        let _ = (event.page(), event.blog(), event.content(), event.comment());
        let _ = (
            event.attachment(),
            event.space(),
            event.label(),
            event.user(),
        );
        let _ = event.body::<serde_json::Map<String, Value>>();
    }

    fn origin() -> Origin {
        Origin {
            topic: "t".into(),
            partition: 0,
            offset: 0,
        }
    }

    proptest! {
        #[test]
        fn webhook_bodies_of_arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let envelope = Envelope::new(
                EventKind::Webhook("page_created".into()),
                "tenant-1",
                "https://acme.atlassian.net/wiki",
                bytes::Bytes::from(body),
            );
            if let Ok(event) = Event::new(envelope, origin()) {
                read_everything(&event);
            }
        }

        #[test]
        fn webhook_bodies_of_arbitrary_shapes_never_panic(
            entity in prop_oneof![Just("page"), Just("blog"), Just("comment"), Just("attachment"), Just("space"), Just("label"), Just("user"), Just("content")],
            id in prop_oneof![any::<i64>().prop_map(Value::from), ".{0,10}".prop_map(Value::from), Just(Value::Null), any::<f64>().prop_map(Value::from)],
            nested in ".{0,40}",
        ) {
            let body = serde_json::json!({
                entity: { "id": id, "parent": { "id": nested }, "inReplyTo": nested, "version": nested },
                "userAccountId": id,
                "timestamp": nested,
            });
            let envelope = Envelope::new(
                EventKind::Webhook(format!("{entity}_created")),
                "tenant-1",
                "https://acme.atlassian.net/wiki",
                bytes::Bytes::from(body.to_string()),
            );
            let event = Event::new(envelope, origin()).expect("a JSON object is an event");
            read_everything(&event);
        }
    }
}
