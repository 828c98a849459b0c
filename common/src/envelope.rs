//! The event envelope: CloudEvents 1.0 in Kafka binary mode.
//!
//! The record value is the body exactly as received (lifecycle bodies without their shared
//! secret), the key is the tenant's clientKey, and the attributes travel as `ce_*` headers,
//! so any Kafka consumer can read the topics without Tributary's code.

use std::borrow::Cow;

use bytes::Bytes;
use chrono::{DateTime, Datelike, SecondsFormat, SubsecRound, Timelike, Utc};
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

    /// The `ce_type` as its two parts: the prefix of the event's family and its name.
    fn ce_type_parts(&self) -> (&'static str, &str) {
        match self {
            EventKind::Webhook(name) => (WEBHOOK_TYPE_PREFIX, name.as_str()),
            EventKind::Lifecycle(t) => (LIFECYCLE_TYPE_PREFIX, t.as_str()),
            EventKind::Forge(name) => (FORGE_TYPE_PREFIX, name.as_str()),
        }
    }

    pub fn ce_type(&self) -> String {
        let (prefix, name) = self.ce_type_parts();
        // Two copies into one allocation; `format!` costs several times that per record.
        let mut ce_type = String::with_capacity(prefix.len() + name.len());
        ce_type.push_str(prefix);
        ce_type.push_str(name);
        ce_type
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
    /// Borrowed when it is JSON's, as it nearly always is: no copy per record.
    pub content_type: Cow<'static, str>,
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
        let id = uuid::Uuid::now_v7();
        Envelope {
            id: id_text(id),
            source: source.to_string(),
            kind,
            time: time_of(&id),
            subject: None,
            client_key: client_key.to_string(),
            content_type: Cow::Borrowed(JSON_CONTENT_TYPE),
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
        let mut headers = Vec::with_capacity(8);
        self.for_each_header(|name, value| headers.push((name, value.to_string())));
        headers
    }

    /// Calls `f` with each record header in the order of [`Self::headers`], lending the
    /// values rather than copying them.
    pub fn for_each_header(&self, mut f: impl FnMut(&'static str, &str)) {
        f(header::SPEC_VERSION, SPEC_VERSION);
        f(header::ID, &self.id);
        f(header::SOURCE, &self.source);
        // Joined on the stack for every name of a sane length; the header is only lent.
        let (prefix, name) = self.kind.ce_type_parts();
        let mut joined = [0u8; 128];
        let length = prefix.len() + name.len();
        match joined.get_mut(..length) {
            Some(out) => {
                out[..prefix.len()].copy_from_slice(prefix.as_bytes());
                out[prefix.len()..].copy_from_slice(name.as_bytes());
                f(header::TYPE, std::str::from_utf8(out).unwrap_or_default());
            }
            None => f(header::TYPE, &self.kind.ce_type()),
        }
        match rfc3339_millis(&self.time) {
            Some(time) => f(header::TIME, std::str::from_utf8(&time).unwrap_or_default()),
            None => f(
                header::TIME,
                &self.time.to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
        }
        if let Some(subject) = &self.subject {
            f(header::SUBJECT, subject);
        }
        f(header::CLIENT_KEY, &self.client_key);
        f(header::CONTENT_TYPE, &self.content_type);
    }

    /// Rebuilds an envelope from a record's key, headers and value.
    pub fn decode<'a>(
        key: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
        value: Option<&[u8]>,
    ) -> Result<Self, EnvelopeError> {
        Self::decode_shared(key, headers, value.map(Bytes::copy_from_slice))
    }

    /// [`Envelope::decode`] of a value the caller owns already, kept rather than copied.
    pub fn decode_shared<'a>(
        key: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
        value: Option<Bytes>,
    ) -> Result<Self, EnvelopeError> {
        // Borrowed until the end: only the fields the envelope keeps are copied.
        let mut found: [Option<&'a str>; 8] = Default::default();
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
                    .map(std::str::from_utf8)
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
            return Err(EnvelopeError::SpecVersion(spec.to_string()));
        }
        let id = id
            .filter(|s| !s.is_empty())
            .ok_or(EnvelopeError::MissingHeader(header::ID))?;
        let kind = ce_type
            .ok_or(EnvelopeError::MissingHeader(header::TYPE))
            .and_then(|t| {
                EventKind::from_ce_type(t).ok_or(EnvelopeError::BadHeader(header::TYPE))
            })?;
        let time = time
            .ok_or(EnvelopeError::MissingHeader(header::TIME))
            .and_then(|t| {
                DateTime::parse_from_rfc3339(t)
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
            id: id.to_string(),
            source: source
                .ok_or(EnvelopeError::MissingHeader(header::SOURCE))?
                .to_string(),
            kind,
            time,
            subject: subject.map(str::to_string),
            client_key: client_key.to_string(),
            content_type: match content_type {
                None | Some(JSON_CONTENT_TYPE) => Cow::Borrowed(JSON_CONTENT_TYPE),
                Some(other) => Cow::Owned(other.to_string()),
            },
            data: value.ok_or(EnvelopeError::NoData)?,
        })
    }
}

/// The time a v7 id carries (milliseconds, what the ce_time header holds): the clock is read
/// once per envelope, for the id, and the event's time cannot disagree with its id.
fn time_of(id: &uuid::Uuid) -> DateTime<Utc> {
    id.get_timestamp()
        .and_then(|stamp| {
            let (seconds, nanos) = stamp.to_unix();
            DateTime::from_timestamp(i64::try_from(seconds).ok()?, nanos)
        })
        .unwrap_or_else(|| Utc::now().trunc_subsecs(3))
}

/// The id's `Display` form (lowercase, hyphenated), encoded on the stack and copied once
/// rather than written through the formatting machinery.
fn id_text(id: uuid::Uuid) -> String {
    let mut buffer = uuid::Uuid::encode_buffer();
    (*id.hyphenated().encode_lower(&mut buffer)).to_owned()
}

/// `ce_time` as `to_rfc3339_opts(SecondsFormat::Millis, true)` writes it, on the stack: the
/// formatting machinery and an allocation per record are more than these 24 bytes need.
/// `None` for what that layout cannot hold (a year outside 0..=9999, a leap second), which
/// the caller formats the general way.
fn rfc3339_millis(time: &DateTime<Utc>) -> Option<[u8; 24]> {
    let year = u32::try_from(time.year())
        .ok()
        .filter(|year| *year <= 9999)?;
    let nanos = time.nanosecond();
    if nanos >= 1_000_000_000 {
        return None;
    }
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut value: u32| {
        for digit in out[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, time.month());
    put(8, 2, time.day());
    put(11, 2, time.hour());
    put(14, 2, time.minute());
    put(17, 2, time.second());
    put(20, 3, nanos / 1_000_000);
    Some(out)
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

/// What [`read_object_subject`] found in a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonBody {
    /// A JSON object, and its subject as [`subject_of`] would find it.
    Object { subject: Option<String> },
    /// Valid JSON that is not an object.
    NotObject,
}

/// Parses `body` as JSON exactly as `serde_json::from_slice::<Value>` would (the same
/// errors at the same places: every value is visited, strings are checked, nesting is
/// bounded) but keeps only what [`subject_of`] reads, so no tree of maps and strings is
/// built for a body that travels on as bytes.
pub fn read_object_subject(body: &[u8]) -> Result<JsonBody, serde_json::Error> {
    serde_json::from_slice::<subject_scan::Top>(body).map(|top| top.0)
}

pub(crate) mod subject_scan {
    //! Visitors that walk a JSON document once. Each keeps, as a `Value` map would, the last
    //! value of a repeated key. The token's header and claims are read with them too.

    use std::fmt;

    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::Number;

    use super::JsonBody;

    const ENTITIES: [&str; 5] = ["page", "blog", "comment", "attachment", "content"];

    pub struct Top(pub JsonBody);

    /// Any value, visited fully and dropped.
    pub(crate) struct Skip;

    /// A key of interest, by index, or none.
    pub(crate) struct Key(pub(crate) Option<usize>);

    pub(crate) struct KeySeed(pub(crate) &'static [&'static str]);

    /// An entity object's ids: `idAsString` when a string, `id` when a string or a number.
    #[derive(Default)]
    struct Entity {
        id_as_string: Option<String>,
        id: Option<String>,
    }

    /// A scalar kept as text when it is a string (and, with `numbers`, a number).
    pub(crate) struct Text {
        pub(crate) value: Option<String>,
    }

    /// A number as `Value::as_f64` reads it, or `None` for any other value.
    pub(crate) struct Numeric(pub(crate) Option<f64>);

    struct TextVisitor {
        numbers: bool,
    }

    /// `space.key` when a string.
    struct Space(Option<String>);

    /// `Some` when the value is an object.
    struct Maybe<T>(Option<T>);

    macro_rules! scalars_are {
        ($value:expr) => {
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok($value)
            }
        };
    }

    pub(crate) use scalars_are;

    impl<'de> Deserialize<'de> for Skip {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Skip;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                scalars_are!(Skip);
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
                    while map.next_entry::<Skip, Skip>()?.is_some() {}
                    Ok(Skip)
                }
            }
            deserializer.deserialize_any(V)
        }
    }

    impl<'de> serde::de::DeserializeSeed<'de> for KeySeed {
        type Value = Key;
        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
            struct V(&'static [&'static str]);
            impl<'de> Visitor<'de> for V {
                type Value = Key;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a key")
                }
                fn visit_str<E>(self, key: &str) -> Result<Key, E> {
                    Ok(Key(self.0.iter().position(|name| *name == key)))
                }
            }
            deserializer.deserialize_any(V(self.0))
        }
    }

    impl<'de> Deserialize<'de> for Numeric {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Numeric;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_bool<E>(self, _: bool) -> Result<Numeric, E> {
                    Ok(Numeric(None))
                }
                fn visit_i64<E>(self, n: i64) -> Result<Numeric, E> {
                    Ok(Numeric(Some(n as f64)))
                }
                fn visit_u64<E>(self, n: u64) -> Result<Numeric, E> {
                    Ok(Numeric(Some(n as f64)))
                }
                fn visit_f64<E>(self, n: f64) -> Result<Numeric, E> {
                    Ok(Numeric(Some(n)))
                }
                fn visit_str<E>(self, _: &str) -> Result<Numeric, E> {
                    Ok(Numeric(None))
                }
                fn visit_unit<E>(self) -> Result<Numeric, E> {
                    Ok(Numeric(None))
                }
                fn visit_none<E>(self) -> Result<Numeric, E> {
                    Ok(Numeric(None))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Numeric, A::Error> {
                    while seq.next_element::<Skip>()?.is_some() {}
                    Ok(Numeric(None))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Numeric, A::Error> {
                    while map.next_entry::<Skip, Skip>()?.is_some() {}
                    Ok(Numeric(None))
                }
            }
            deserializer.deserialize_any(V)
        }
    }

    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(TextVisitor { numbers: false })
        }
    }

    fn text_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
        deserializer.deserialize_any(TextVisitor { numbers: true })
    }

    impl<'de> Visitor<'de> for TextVisitor {
        type Value = Text;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Text, E> {
            Ok(Text { value: None })
        }
        fn visit_i64<E>(self, n: i64) -> Result<Text, E> {
            Ok(self.number(Some(Number::from(n))))
        }
        fn visit_u64<E>(self, n: u64) -> Result<Text, E> {
            Ok(self.number(Some(Number::from(n))))
        }
        fn visit_f64<E>(self, n: f64) -> Result<Text, E> {
            Ok(self.number(Number::from_f64(n)))
        }
        fn visit_str<E>(self, text: &str) -> Result<Text, E> {
            Ok(Text {
                value: Some(text.to_string()),
            })
        }
        fn visit_unit<E>(self) -> Result<Text, E> {
            Ok(Text { value: None })
        }
        fn visit_none<E>(self) -> Result<Text, E> {
            Ok(Text { value: None })
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
            while seq.next_element::<Skip>()?.is_some() {}
            Ok(Text { value: None })
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
            while map.next_entry::<Skip, Skip>()?.is_some() {}
            Ok(Text { value: None })
        }
    }

    impl TextVisitor {
        fn number(&self, n: Option<Number>) -> Text {
            Text {
                value: n.filter(|_| self.numbers).map(|n| n.to_string()),
            }
        }
    }

    impl<'de> Deserialize<'de> for Maybe<Entity> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Maybe<Entity>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                scalars_are!(Maybe(None));
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    let mut entity = Entity::default();
                    while let Some(Key(index)) =
                        map.next_key_seed(KeySeed(&["idAsString", "id"]))?
                    {
                        match index {
                            Some(0) => entity.id_as_string = map.next_value::<Text>()?.value,
                            Some(_) => {
                                entity.id = map.next_value_seed(TextOrNumber)?.value;
                            }
                            None => {
                                map.next_value::<Skip>()?;
                            }
                        }
                    }
                    Ok(Maybe(Some(entity)))
                }
            }
            deserializer.deserialize_any(V)
        }
    }

    struct TextOrNumber;

    impl<'de> serde::de::DeserializeSeed<'de> for TextOrNumber {
        type Value = Text;
        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Text, D::Error> {
            text_or_number(deserializer)
        }
    }

    impl<'de> Deserialize<'de> for Space {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Space;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                scalars_are!(Space(None));
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Space, A::Error> {
                    let mut key = None;
                    while let Some(Key(index)) = map.next_key_seed(KeySeed(&["key"]))? {
                        match index {
                            Some(_) => key = map.next_value::<Text>()?.value,
                            None => {
                                map.next_value::<Skip>()?;
                            }
                        }
                    }
                    Ok(Space(key))
                }
            }
            deserializer.deserialize_any(V)
        }
    }

    const TOP_KEYS: [&str; 6] = ["page", "blog", "comment", "attachment", "content", "space"];

    impl<'de> Deserialize<'de> for Top {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Top;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                scalars_are!(Top(JsonBody::NotObject));
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
                    let mut entities: [Option<Entity>; ENTITIES.len()] = Default::default();
                    let mut space = None;
                    while let Some(Key(index)) = map.next_key_seed(KeySeed(&TOP_KEYS))? {
                        match index {
                            Some(i) if i < ENTITIES.len() => {
                                entities[i] = map.next_value::<Maybe<Entity>>()?.0;
                            }
                            Some(_) => space = map.next_value::<Space>()?.0,
                            None => {
                                map.next_value::<Skip>()?;
                            }
                        }
                    }
                    let subject = entities
                        .into_iter()
                        .flatten()
                        .find_map(|entity| entity.id_as_string.or(entity.id))
                        .or(space);
                    Ok(Top(JsonBody::Object { subject }))
                }
            }
            deserializer.deserialize_any(V)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_written_as_display_writes_them() {
        let mut ids = vec![uuid::Uuid::nil(), uuid::Uuid::max()];
        ids.extend((0..200).map(|_| uuid::Uuid::now_v7()));
        ids.extend((0..200).map(|_| uuid::Uuid::new_v4()));
        for id in ids {
            assert_eq!(super::id_text(id), id.to_string());
        }
    }

    #[test]
    fn types_are_the_prefix_and_the_name() {
        use super::{EventKind, FORGE_TYPE_PREFIX, LIFECYCLE_TYPE_PREFIX, WEBHOOK_TYPE_PREFIX};
        use crate::connect::LifecycleEventType;
        for name in ["page_created", "", "é", "a b"] {
            assert_eq!(
                EventKind::Webhook(name.to_string()).ce_type(),
                format!("{WEBHOOK_TYPE_PREFIX}{name}")
            );
            assert_eq!(
                EventKind::Forge(name.to_string()).ce_type(),
                format!("{FORGE_TYPE_PREFIX}{name}")
            );
        }
        for kind in LifecycleEventType::ALL {
            assert_eq!(
                EventKind::Lifecycle(kind).ce_type(),
                format!("{LIFECYCLE_TYPE_PREFIX}{}", kind.as_str())
            );
        }
    }

    use super::*;

    fn header_of(envelope: &Envelope, wanted: &str) -> Option<String> {
        envelope
            .headers()
            .into_iter()
            .find_map(|(name, value)| (name == wanted).then_some(value))
    }

    #[test]
    fn the_type_header_is_ce_type_for_names_short_and_long() {
        for length in [0, 1, 90, 103, 104, 105, 300] {
            let name = "x".repeat(length);
            for kind in [
                EventKind::Webhook(name.clone()),
                EventKind::Forge(name.clone()),
            ] {
                let envelope = Envelope::new(kind.clone(), "t", "https://s", Bytes::new());
                assert_eq!(
                    header_of(&envelope, header::TYPE),
                    Some(kind.ce_type()),
                    "{length}"
                );
            }
        }
    }

    #[test]
    fn an_envelope_time_is_its_id_time_in_milliseconds() {
        let before = Utc::now().timestamp_millis();
        let envelope = Envelope::new(
            EventKind::Webhook("e".into()),
            "t",
            "https://s",
            Bytes::new(),
        );
        let after = Utc::now().timestamp_millis();
        let id = uuid::Uuid::parse_str(&envelope.id).expect("a uuid");
        let (seconds, nanos) = id.get_timestamp().expect("a v7 id").to_unix();
        let id_millis = seconds as i64 * 1000 + i64::from(nanos / 1_000_000);
        assert_eq!(envelope.time.timestamp_millis(), id_millis);
        assert_eq!(envelope.time.timestamp_subsec_nanos() % 1_000_000, 0);
        assert!(
            (before..=after).contains(&id_millis),
            "{before} {id_millis} {after}"
        );
        assert_eq!(envelope.content_type, JSON_CONTENT_TYPE);
    }

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
    fn record_times_are_written_as_chrono_writes_them() {
        let times = [
            "2026-12-02T04:32:25.123Z",
            "2026-01-09T00:00:00Z",
            "0000-01-01T00:00:00.001Z",
            "9999-12-31T23:59:59.999Z",
            "2016-12-31T23:59:60.500Z",
            "1969-07-20T20:17:40.9999999Z",
        ];
        for text in times {
            let time = DateTime::parse_from_rfc3339(text)
                .expect("a valid time")
                .with_timezone(&Utc);
            let written = rfc3339_millis(&time).map(|t| String::from_utf8_lossy(&t).into_owned());
            let chrono = time.to_rfc3339_opts(SecondsFormat::Millis, true);
            match written {
                Some(written) => assert_eq!(written, chrono, "{text}"),
                // A leap second is left to chrono.
                None => assert!(time.nanosecond() >= 1_000_000_000, "{text}"),
            }
        }
        let far = DateTime::<Utc>::from_timestamp(400_000_000_000, 0).expect("year 14645");
        assert_eq!(rfc3339_millis(&far), None);
        let before = DateTime::<Utc>::from_timestamp(-62_200_000_000, 0).expect("year -1");
        assert_eq!(rfc3339_millis(&before), None);
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

    /// The one-pass reader answers what parsing into a `Value` and `subject_of` answer, and
    /// fails where that parse fails, at the same place.
    #[test]
    fn one_pass_subjects_match_value_parsing() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let bodies: Vec<&[u8]> = vec![
            br#"{"page": {"id": 7}}"#,
            br#"{"page": {"id": -7}}"#,
            br#"{"page": {"id": 7.5e3}}"#,
            br#"{"page": {"id": -0}}"#,
            br#"{"page": {"id": 18446744073709551615}}"#,
            br#"{"page": {"id": true}, "blog": {"idAsString": "b"}}"#,
            br#"{"page": 5, "comment": {"id": "c"}}"#,
            br#"{"page": {"idAsString": "a"}, "page": {"id": 3}}"#,
            br#"{"page": {"idAsString": "a", "idAsString": 1, "id": null}}"#,
            br#"{"content": {"id": {"x": 1}}, "space": {"key": "K", "key": "L"}}"#,
            br#"{"space": {"key": 1}}"#,
            br#"{"space": ["key"], "attachment": {"id": "at", "idAsString": "s"}}"#,
            br#"{"pa\u0067e": {"id\u0041sString": "escaped"}}"#,
            br#"{"user": {"nested": [1, {"page": {"id": 1}}]}}"#,
            br#"{}"#,
            b"[1, 2]",
            b"\"text\"",
            b"12",
            b"null",
            b"",
            b"{",
            b"{\"page\": {\"id\": 1}} trailing",
            b"{\"a\": \"\xff\"}",
            b"{\"a\": \"\\ud800\"}",
            b"{\"a\": 1e400}",
            b"{\"a\": [1, 2,]}",
            deep.as_bytes(),
        ];
        for body in bodies {
            let expected = serde_json::from_slice::<Value>(body).map(|value| match value {
                Value::Object(_) => JsonBody::Object {
                    subject: subject_of(&value),
                },
                _ => JsonBody::NotObject,
            });
            let got = read_object_subject(body);
            let text = String::from_utf8_lossy(body);
            match (expected, got) {
                (Ok(expected), Ok(got)) => assert_eq!(got, expected, "{text}"),
                (Err(expected), Err(got)) => assert_eq!(
                    (got.classify(), got.line(), got.column()),
                    (expected.classify(), expected.line(), expected.column()),
                    "{text}"
                ),
                (expected, got) => panic!("{text}: expected {expected:?}, got {got:?}"),
            }
        }
    }
}
