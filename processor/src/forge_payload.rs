//! Forge's event bodies read into the same typed entities as Connect's.
//!
//! Forge sends pages, blog posts, comments and custom content as `content` (`id`, `type`,
//! `title`, `space`, `history`, `version`; a comment adds `container` and `ancestors`), an
//! attachment as `attachment` (the same fields plus `extensions`), the space of space and
//! space-level label events as a top-level `space`, the acting user as `atlassianId` and the
//! time as `eventCreatedDate` (ISO 8601); Connect sends `page`, `blog`, `comment`, ... with
//! flat fields (`spaceKey`, `creatorAccountId`, ...) and `timestamp` in epoch milliseconds.

use chrono::DateTime;
use serde_json::Value;

use crate::payload::{Attachment, Comment, Content, Space};

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An ISO 8601 time as epoch milliseconds.
fn millis(value: Option<&Value>) -> Option<i64> {
    value
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis())
}

/// A number Forge sends as a number in some payloads and as a string in others (an
/// attachment's `fileSize`).
fn integer(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// One of Forge's content objects (page, blog post, comment, attachment, container).
fn content_object(content: &Value) -> Content {
    let space = content.get("space");
    let history = content.get("history");
    let version = content.get("version");
    Content {
        id: text(content.get("id")),
        title: text(content.get("title")),
        space_key: text(space.and_then(|s| s.get("key"))),
        space_id: text(space.and_then(|s| s.get("id"))),
        content_type: content
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_string),
        creator_account_id: text(
            history
                .and_then(|h| h.get("createdBy"))
                .and_then(|u| u.get("accountId")),
        ),
        last_modifier_account_id: text(
            version
                .and_then(|v| v.get("by"))
                .and_then(|u| u.get("accountId")),
        ),
        version: version
            .and_then(|v| v.get("number"))
            .and_then(Value::as_i64),
        creation_date: millis(history.and_then(|h| h.get("createdDate"))),
        modification_date: millis(version.and_then(|v| v.get("when"))),
        self_url: None,
    }
}

fn object<'a>(body: &'a Value, field: &str) -> Option<&'a Value> {
    body.get(field).filter(|v| v.is_object())
}

/// Forge's `content` as a [`Content`], when its `type` is `kind` (any type for `None`).
pub(crate) fn content(body: &Value, kind: Option<&str>) -> Option<Content> {
    let content = object(body, "content")?;
    if kind.is_some_and(|k| content.get("type").and_then(Value::as_str) != Some(k)) {
        return None;
    }
    Some(content_object(content))
}

/// Forge's comment: `content` of type `comment`, on its `container`, answering the newest
/// of its `ancestors` (Forge lists them newest first).
pub(crate) fn comment(body: &Value) -> Option<Comment> {
    let content = object(body, "content")
        .filter(|c| c.get("type").and_then(Value::as_str) == Some("comment"))?;
    let in_reply_to = content
        .get("ancestors")
        .and_then(Value::as_array)
        .and_then(|ancestors| ancestors.first())
        .filter(|a| a.is_object())
        .map(|ancestor| {
            Box::new(Comment {
                content: content_object(ancestor),
                ..Comment::default()
            })
        });
    Some(Comment {
        content: content_object(content),
        parent: object(content, "container").map(content_object),
        in_reply_to,
    })
}

/// Forge's `attachment`: its `title` is the file name, `extensions` hold the media type
/// and size.
pub(crate) fn attachment(body: &Value) -> Option<Attachment> {
    let attachment = object(body, "attachment")?;
    let extensions = attachment.get("extensions");
    Some(Attachment {
        content: content_object(attachment),
        file_name: text(attachment.get("title")),
        file_size: integer(extensions.and_then(|e| e.get("fileSize"))),
        media_type: text(extensions.and_then(|e| e.get("mediaType"))),
        comment: None,
    })
}

/// The space: the top-level `space` of space and space-level label events, otherwise the
/// space of the `content` or `attachment` the event is about.
pub(crate) fn space(body: &Value) -> Option<Space> {
    let space = object(body, "space").or_else(|| {
        ["content", "attachment"]
            .iter()
            .find_map(|field| object(body, field).and_then(|c| object(c, "space")))
    })?;
    let history = space.get("history");
    Some(Space {
        id: text(space.get("id")),
        key: text(space.get("key")),
        name: text(space.get("name")),
        creator_account_id: text(
            history
                .and_then(|h| h.get("createdBy"))
                .and_then(|u| u.get("accountId")),
        ),
        creation_date: millis(history.and_then(|h| h.get("createdDate"))),
        self_url: None,
    })
}

/// When the event happened (`eventCreatedDate`), epoch milliseconds.
pub(crate) fn timestamp_millis(body: &Value) -> Option<i64> {
    millis(body.get("eventCreatedDate"))
}
