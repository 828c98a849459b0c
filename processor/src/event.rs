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

    /// When Confluence says it happened, epoch milliseconds: Connect's `timestamp`, Forge's
    /// `eventCreatedDate`.
    pub fn timestamp_millis(&self) -> Option<i64> {
        match self.source() {
            EventSource::Connect => self.json().get("timestamp").and_then(Value::as_i64),
            EventSource::Forge => forge_payload::timestamp_millis(self.json()),
        }
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

    /// The comment: Connect's `comment`, or Forge's `content` when it is a comment (its
    /// `container` as the parent, the newest of its `ancestors` as the one it answers).
    pub fn comment(&self) -> Option<Comment> {
        match self.source() {
            EventSource::Connect => self.entity("comment"),
            EventSource::Forge => forge_payload::comment(self.json()),
        }
    }

    /// The attachment: Connect's or Forge's `attachment`.
    pub fn attachment(&self) -> Option<Attachment> {
        match self.source() {
            EventSource::Connect => self.entity("attachment"),
            EventSource::Forge => forge_payload::attachment(self.json()),
        }
    }

    /// The space: Connect's `space`; for Forge the top-level `space` of space and
    /// space-level label events, otherwise the space of the content or attachment.
    pub fn space(&self) -> Option<Space> {
        match self.source() {
            EventSource::Connect => self.entity("space"),
            EventSource::Forge => forge_payload::space(self.json()),
        }
    }

    /// The label: `label` (`id`, `name`, `prefix`), the same shape on both platforms.
    pub fn label(&self) -> Option<Label> {
        self.entity("label")
    }

    /// The user of a user event: `user`, whose `accountId`, `accountType` and
    /// `displayName` both platforms name alike.
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

    fn connect_event(name: &str, body: Value) -> Event {
        let envelope = Envelope::new(
            EventKind::Webhook(name.into()),
            "tenant-1",
            "https://acme.atlassian.net/wiki",
            bytes::Bytes::from(body.to_string()),
        );
        Event::new(envelope, origin()).expect("json body")
    }

    /// A Forge delivery of `body`, whose `eventType` names the event.
    fn forge_event(body: Value) -> Event {
        let name = body["eventType"].as_str().expect("eventType").to_string();
        let envelope = Envelope::new(
            EventKind::Forge(name),
            "ari:cloud:confluence::site/c1",
            "https://api.atlassian.com/ex/confluence/c1",
            bytes::Bytes::from(body.to_string()),
        );
        Event::new(envelope, origin()).expect("json body")
    }

    fn forge_user(account_id: &str) -> Value {
        serde_json::json!({
            "type": "known", "accountId": account_id, "accountType": "atlassian",
            "displayName": account_id, "publicName": account_id
        })
    }

    fn forge_space() -> Value {
        serde_json::json!({
            "id": 827392002, "key": "SP", "alias": "SP", "name": "Project: Sample Project",
            "type": "global", "status": "current"
        })
    }

    #[test]
    fn comments_read_from_both_shapes() {
        let connect = connect_event(
            "comment_created",
            serde_json::json!({
                "comment": {"id": 9, "title": "Re: T", "parent": {"id": 42, "title": "T"}, "inReplyTo": {"id": 8}}
            }),
        );
        let comment = connect.comment().expect("connect comment");
        assert_eq!(comment.content.id.as_deref(), Some("9"));
        assert_eq!(comment.parent.and_then(|p| p.id).as_deref(), Some("42"));
        assert_eq!(
            comment.in_reply_to.and_then(|c| c.content.id).as_deref(),
            Some("8")
        );

        let forge = forge_event(serde_json::json!({
            "eventType": "avi:confluence:created:comment",
            "atlassianId": "4ad9",
            "eventCreatedDate": "2021-01-20T06:29:21.907Z",
            "content": {
                "id": "838205455", "type": "comment", "status": "current",
                "title": "Re: A brand new page", "space": forge_space(),
                "history": {"latest": true, "createdBy": forge_user("4ad9"), "createdDate": "2021-01-20T07:10:41.070Z"},
                "version": {"by": forge_user("4ad9"), "when": "2021-01-20T08:35:00.100Z", "number": 1},
                "ancestors": [
                    {"id": "838205415", "type": "comment", "title": "Re: A brand new page"},
                    {"id": "838205400", "type": "comment", "title": "older"}
                ],
                "container": {"id": "838205441", "type": "page", "title": "A brand new page", "space": forge_space()},
                "extensions": {"location": "footer"}
            }
        }));
        assert_eq!(forge.name(), "comment_created");
        let comment = forge.comment().expect("forge comment");
        assert_eq!(comment.content.id.as_deref(), Some("838205455"));
        assert_eq!(comment.content.content_type.as_deref(), Some("comment"));
        assert_eq!(comment.content.space_key.as_deref(), Some("SP"));
        assert_eq!(comment.content.creator_account_id.as_deref(), Some("4ad9"));
        assert_eq!(comment.content.version, Some(1));
        let parent = comment.parent.expect("the container");
        assert_eq!(parent.id.as_deref(), Some("838205441"));
        assert_eq!(parent.content_type.as_deref(), Some("page"));
        assert_eq!(
            comment.in_reply_to.and_then(|c| c.content.id).as_deref(),
            Some("838205415"),
            "the newest ancestor"
        );
        assert!(forge.page().is_none(), "a comment is not a page");

        let on_a_page = forge_event(serde_json::json!({
            "eventType": "avi:confluence:created:page",
            "content": {"id": "1", "type": "page"}
        }));
        assert!(on_a_page.comment().is_none());
    }

    #[test]
    fn attachments_read_from_both_shapes() {
        let connect = connect_event(
            "attachment_created",
            serde_json::json!({
                "attachment": {"id": 77, "fileName": "logo.png", "fileSize": 3329, "mediaType": "image/png", "comment": "v2"}
            }),
        );
        let attachment = connect.attachment().expect("connect attachment");
        assert_eq!(attachment.content.id.as_deref(), Some("77"));
        assert_eq!(attachment.file_name.as_deref(), Some("logo.png"));
        assert_eq!(attachment.file_size, Some(3329));
        assert_eq!(attachment.media_type.as_deref(), Some("image/png"));

        let forge = forge_event(serde_json::json!({
            "eventType": "avi:confluence:created:attachment",
            "atlassianId": "4ad9",
            "eventCreatedDate": "2021-01-20T06:29:21.907Z",
            "attachment": {
                "id": "838205455", "type": "attachment", "status": "current", "title": "logo.png",
                "space": forge_space(),
                "history": {"latest": true, "createdBy": forge_user("4ad9"), "createdDate": "2021-01-20T07:10:41.070Z"},
                "version": {"by": forge_user("5df0"), "when": "2021-01-20T08:35:00.100Z", "number": 2},
                "container": {"id": "838205441", "type": "page", "title": "A brand new page"},
                "extensions": {"mediaType": "image/png", "fileSize": "3329", "mediaTypeDescription": "PNG Image"}
            }
        }));
        assert_eq!(forge.name(), "attachment_created");
        let attachment = forge.attachment().expect("forge attachment");
        assert_eq!(attachment.content.id.as_deref(), Some("838205455"));
        assert_eq!(attachment.content.space_key.as_deref(), Some("SP"));
        assert_eq!(
            attachment.content.last_modifier_account_id.as_deref(),
            Some("5df0")
        );
        assert_eq!(attachment.file_name.as_deref(), Some("logo.png"));
        assert_eq!(attachment.file_size, Some(3329), "a size sent as text");
        assert_eq!(attachment.media_type.as_deref(), Some("image/png"));
        assert_eq!(forge.space().and_then(|s| s.key).as_deref(), Some("SP"));
    }

    #[test]
    fn labels_read_from_both_shapes() {
        let connect = connect_event(
            "label_added",
            serde_json::json!({"label": {"id": 5, "name": "draft", "prefix": "global"}}),
        );
        let label = connect.label().expect("connect label");
        assert_eq!(
            (label.id.as_deref(), label.name.as_deref()),
            (Some("5"), Some("draft"))
        );

        let forge = forge_event(serde_json::json!({
            "eventType": "avi:confluence:added:label",
            "atlassianId": "4ad9",
            "eventCreatedDate": "2021-01-20T06:29:21.970Z",
            "label": {"id": "123456789", "name": "example-label", "prefix": "global"},
            "content": {"id": "838205441", "type": "page", "title": "A brand new page", "space": forge_space()}
        }));
        assert_eq!(forge.name(), "label_added");
        let label = forge.label().expect("forge label");
        assert_eq!(label.id.as_deref(), Some("123456789"));
        assert_eq!(label.name.as_deref(), Some("example-label"));
        assert_eq!(label.prefix.as_deref(), Some("global"));
        assert_eq!(
            forge.content().and_then(|c| c.id).as_deref(),
            Some("838205441")
        );
        assert_eq!(forge.space().and_then(|s| s.key).as_deref(), Some("SP"));
    }

    #[test]
    fn users_read_from_both_shapes() {
        let connect = connect_event(
            "user_created",
            serde_json::json!({"user": {"accountId": "557058:u", "accountType": "atlassian", "displayName": "Ann"}}),
        );
        let user = connect.user().expect("connect user");
        assert_eq!(user.account_id.as_deref(), Some("557058:u"));
        assert_eq!(user.display_name.as_deref(), Some("Ann"));

        let forge = forge_event(serde_json::json!({
            "eventType": "avi:confluence:created:user",
            "eventCreatedDate": "2021-01-20T06:29:21.970Z",
            "user": forge_user("4ad9aa0c52dc1b420a791d12")
        }));
        assert_eq!(forge.name(), "user_created");
        let user = forge.user().expect("forge user");
        assert_eq!(user.account_id.as_deref(), Some("4ad9aa0c52dc1b420a791d12"));
        assert_eq!(user.account_type.as_deref(), Some("atlassian"));
        assert_eq!(forge.user_account_id(), None, "user events name no actor");
    }

    #[test]
    fn spaces_read_from_both_shapes() {
        let connect = connect_event(
            "space_created",
            serde_json::json!({"space": {"id": 3, "key": "DEV", "name": "Development", "creatorAccountId": "u1", "creationDate": 1700000000000_i64}}),
        );
        let space = connect.space().expect("connect space");
        assert_eq!(space.key.as_deref(), Some("DEV"));
        assert_eq!(space.creation_date, Some(1_700_000_000_000));

        let mut space = forge_space();
        space["history"] = serde_json::json!({
            "createdBy": forge_user("4ad9"), "createdDate": "2021-01-20T06:29:20.501Z"
        });
        let forge = forge_event(serde_json::json!({
            "eventType": "avi:confluence:created:space:V2",
            "atlassianId": "4ad9",
            "eventCreatedDate": "2021-01-20T06:29:21.907Z",
            "space": space
        }));
        assert_eq!(forge.name(), "space_created");
        let space = forge.space().expect("forge space");
        assert_eq!(space.id.as_deref(), Some("827392002"));
        assert_eq!(space.key.as_deref(), Some("SP"));
        assert_eq!(space.name.as_deref(), Some("Project: Sample Project"));
        assert_eq!(space.creator_account_id.as_deref(), Some("4ad9"));
        assert_eq!(space.creation_date, Some(1_611_124_160_501));

        // A space-level label event carries the space at the top level too.
        let label_on_space = forge_event(serde_json::json!({
            "eventType": "avi:confluence:added:label",
            "label": {"id": "1", "name": "x", "prefix": "global"},
            "space": forge_space()
        }));
        assert_eq!(
            label_on_space.space().and_then(|s| s.key).as_deref(),
            Some("SP")
        );
        assert!(label_on_space.content().is_none());
    }

    #[test]
    fn timestamps_read_from_both_shapes() {
        let connect = connect_event(
            "page_created",
            serde_json::json!({"timestamp": 1700000000000_i64, "page": {"id": 1}}),
        );
        assert_eq!(connect.timestamp_millis(), Some(1_700_000_000_000));

        let forge = forge_event(serde_json::json!({
            "eventType": "avi:confluence:created:page",
            "eventCreatedDate": "2021-01-20T06:29:21.907Z",
            "content": {"id": "1", "type": "page"}
        }));
        assert_eq!(forge.timestamp_millis(), Some(1_611_124_161_907));
        let undated = forge_event(serde_json::json!({
            "eventType": "avi:confluence:created:page",
            "eventCreatedDate": "yesterday"
        }));
        assert_eq!(undated.timestamp_millis(), None);
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
        fn forge_bodies_of_arbitrary_shapes_never_panic(
            entity in prop_oneof![Just("content"), Just("attachment"), Just("space"), Just("label"), Just("user")],
            id in prop_oneof![any::<i64>().prop_map(Value::from), ".{0,10}".prop_map(Value::from), Just(Value::Null), any::<f64>().prop_map(Value::from)],
            nested in ".{0,40}",
        ) {
            let body = serde_json::json!({
                "eventType": "avi:confluence:created:comment",
                entity: {
                    "id": id, "type": "comment", "space": nested, "history": {"createdDate": nested},
                    "ancestors": [id, {"id": nested}], "container": id,
                    "extensions": {"fileSize": nested, "mediaType": id}
                },
                "eventCreatedDate": nested,
            });
            read_everything(&forge_event(body));
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
