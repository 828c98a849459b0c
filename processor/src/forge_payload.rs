//! Forge's event bodies read into the same typed entities as Connect's.
//!
//! Forge sends the page or blog post as `content` (`id`, `type`, `title`, `space`,
//! `history`, `version`), the acting user as `atlassianId`; Connect sends `page` or `blog`
//! with flat fields (`spaceKey`, `creatorAccountId`, ...).

use chrono::DateTime;
use serde_json::Value;

use crate::payload::{Content, Space};

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Forge's `content` as a [`Content`], when its `type` is `kind` (any type for `None`).
pub(crate) fn content(body: &Value, kind: Option<&str>) -> Option<Content> {
    let content = body.get("content").filter(|c| c.is_object())?;
    let content_type = content.get("type").and_then(Value::as_str);
    if kind.is_some_and(|k| content_type != Some(k)) {
        return None;
    }
    let space = content.get("space");
    let history = content.get("history");
    let millis = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis())
    };
    Some(Content {
        id: text(content.get("id")),
        title: text(content.get("title")),
        space_key: text(space.and_then(|s| s.get("key"))),
        space_id: text(space.and_then(|s| s.get("id"))),
        content_type: content_type.map(str::to_string),
        creator_account_id: text(
            history
                .and_then(|h| h.get("createdBy"))
                .and_then(|u| u.get("accountId")),
        ),
        last_modifier_account_id: text(
            content
                .get("version")
                .and_then(|v| v.get("by"))
                .and_then(|u| u.get("accountId")),
        ),
        version: content
            .get("version")
            .and_then(|v| v.get("number"))
            .and_then(Value::as_i64),
        creation_date: millis(history.and_then(|h| h.get("createdDate"))),
        modification_date: millis(content.get("version").and_then(|v| v.get("when"))),
        self_url: None,
    })
}

/// The space of Forge's `content`.
pub(crate) fn space(body: &Value) -> Option<Space> {
    let space = body
        .get("content")?
        .get("space")
        .filter(|s| s.is_object())?;
    Some(Space {
        id: text(space.get("id")),
        key: text(space.get("key")),
        name: text(space.get("name")),
        ..Space::default()
    })
}
