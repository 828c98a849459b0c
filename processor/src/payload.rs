//! Typed views of the entities in Confluence webhook bodies.
//!
//! Confluence's bodies vary between events and over time, so every field is optional and
//! unknown fields are ignored; ids arrive as numbers in some payloads and strings in others
//! and are always strings here. The raw JSON stays at hand through [`crate::Event::json`].
//! The REST API answers in shapes of its own, typed in [`crate::confluence`].

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A page or blog post (also the shape of `content`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Content {
    #[serde(deserialize_with = "id_string")]
    pub id: Option<String>,
    pub title: Option<String>,
    pub space_key: Option<String>,
    #[serde(deserialize_with = "id_string")]
    pub space_id: Option<String>,
    pub content_type: Option<String>,
    pub creator_account_id: Option<String>,
    pub last_modifier_account_id: Option<String>,
    pub version: Option<i64>,
    /// Epoch milliseconds.
    pub creation_date: Option<i64>,
    /// Epoch milliseconds.
    pub modification_date: Option<i64>,
    #[serde(rename = "self")]
    pub self_url: Option<String>,
}

/// A comment: content plus what it belongs to.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Comment {
    #[serde(flatten)]
    pub content: Content,
    /// The page or blog post the comment is on.
    pub parent: Option<Content>,
    /// The comment this one answers.
    pub in_reply_to: Option<Box<Comment>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Attachment {
    #[serde(flatten)]
    pub content: Content,
    pub file_name: Option<String>,
    pub file_size: Option<i64>,
    pub media_type: Option<String>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Space {
    #[serde(deserialize_with = "id_string")]
    pub id: Option<String>,
    pub key: Option<String>,
    pub name: Option<String>,
    pub creator_account_id: Option<String>,
    pub creation_date: Option<i64>,
    #[serde(rename = "self")]
    pub self_url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Label {
    #[serde(deserialize_with = "id_string")]
    pub id: Option<String>,
    pub name: Option<String>,
    pub prefix: Option<String>,
    #[serde(rename = "self")]
    pub self_url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct User {
    pub account_id: Option<String>,
    pub account_type: Option<String>,
    pub display_name: Option<String>,
}

fn id_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_as_numbers_or_strings_and_unknown_fields() {
        let page: Content = serde_json::from_value(serde_json::json!({
            "id": 42, "title": "T", "spaceKey": "DEV", "spaceId": "7", "version": 3,
            "self": "https://acme.atlassian.net/wiki/rest/api/content/42", "brandNew": true
        }))
        .expect("page");
        assert_eq!(page.id.as_deref(), Some("42"));
        assert_eq!(page.space_id.as_deref(), Some("7"));
        assert_eq!(page.version, Some(3));
        let comment: Comment = serde_json::from_value(serde_json::json!({
            "id": "9", "parent": {"id": 42, "title": "T"}, "inReplyTo": {"id": 8}
        }))
        .expect("comment");
        assert_eq!(comment.content.id.as_deref(), Some("9"));
        assert_eq!(comment.parent.and_then(|p| p.id).as_deref(), Some("42"));
        assert_eq!(
            comment.in_reply_to.and_then(|c| c.content.id).as_deref(),
            Some("8")
        );
    }

    /// Any JSON value, nested a few levels deep.
    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("id".to_string()),
                        Just("parent".to_string()),
                        Just("inReplyTo".to_string()),
                        Just("version".to_string()),
                        Just("spaceId".to_string()),
                        "[a-zA-Z]{1,8}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn parse_every_entity(value: &Value) {
        let _ = Content::deserialize(value);
        let _ = Comment::deserialize(value);
        let _ = Attachment::deserialize(value);
        let _ = Space::deserialize(value);
        let _ = Label::deserialize(value);
        let _ = User::deserialize(value);
    }

    proptest! {
        #[test]
        fn entities_never_panic_on_arbitrary_json(value in arbitrary_json()) {
            parse_every_entity(&value);
        }

        #[test]
        fn entities_never_panic_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = serde_json::from_slice::<Content>(&body);
            let _ = serde_json::from_slice::<Comment>(&body);
            let _ = serde_json::from_slice::<Attachment>(&body);
            if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                parse_every_entity(&value);
            }
        }

        #[test]
        fn ids_survive_as_strings(id in any::<u64>(), as_text in any::<bool>()) {
            let raw = if as_text { Value::from(id.to_string()) } else { Value::from(id) };
            let page: Content = serde_json::from_value(serde_json::json!({ "id": raw }))
                .expect("an id alone is a page");
            prop_assert_eq!(page.id, Some(id.to_string()));
        }
    }
}
