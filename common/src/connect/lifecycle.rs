//! Lifecycle callback bodies (`installed`, `uninstalled`, `enabled`, `disabled`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::token::is_plausible_identifier;

/// The four lifecycle callbacks Confluence sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LifecycleEventType {
    Installed,
    Uninstalled,
    Enabled,
    Disabled,
}

impl LifecycleEventType {
    pub const ALL: [LifecycleEventType; 4] = [
        LifecycleEventType::Installed,
        LifecycleEventType::Uninstalled,
        LifecycleEventType::Enabled,
        LifecycleEventType::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleEventType::Installed => "installed",
            LifecycleEventType::Uninstalled => "uninstalled",
            LifecycleEventType::Enabled => "enabled",
            LifecycleEventType::Disabled => "disabled",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl std::fmt::Display for LifecycleEventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lifecycle body. Only `key`, `clientKey`, `baseUrl` and `eventType` are required;
/// unknown fields are ignored so that new Confluence fields never break installs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecyclePayload {
    pub key: String,
    pub client_key: String,
    pub base_url: String,
    pub event_type: LifecycleEventType,
    #[serde(default, skip_serializing)]
    pub shared_secret: Option<String>,
    #[serde(default)]
    pub display_url: Option<String>,
    #[serde(default)]
    pub display_url_servicedesk_help_center: Option<String>,
    #[serde(default)]
    pub product_type: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub server_version: Option<String>,
    #[serde(default)]
    pub plugins_version: Option<String>,
    #[serde(default)]
    pub oauth_client_id: Option<String>,
    #[serde(default)]
    pub installation_id: Option<String>,
    #[serde(default)]
    pub entitlement_id: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    pub entitlement_number: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    pub service_entitlement_number: Option<String>,
}

/// Longest `baseUrl` accepted.
pub const MAX_URL_LEN: usize = 2048;
/// Longest optional text field (`description`, `displayUrl`, ...) accepted; Confluence's
/// are a few dozen characters.
pub const MAX_FIELD_LEN: usize = 4096;

fn has_control(value: &str) -> bool {
    value.chars().any(char::is_control)
}

/// Longest shared secret Confluence sends is 128 characters; longer is refused as malformed.
pub const MAX_SHARED_SECRET_LEN: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("body is not a lifecycle JSON object: {0}")]
    Invalid(String),
    #[error("field `{0}` is empty or invalid")]
    BadField(&'static str),
}

impl LifecyclePayload {
    pub fn parse(body: &[u8]) -> Result<Self, PayloadError> {
        let payload: LifecyclePayload =
            serde_json::from_slice(body).map_err(|e| PayloadError::Invalid(e.to_string()))?;
        if payload.client_key.trim().is_empty() || !is_plausible_identifier(&payload.client_key) {
            return Err(PayloadError::BadField("clientKey"));
        }
        if payload.key.trim().is_empty() || !is_plausible_identifier(&payload.key) {
            return Err(PayloadError::BadField("key"));
        }
        if payload.base_url.len() > MAX_URL_LEN || has_control(&payload.base_url) {
            return Err(PayloadError::BadField("baseUrl"));
        }
        for (field, value) in payload.optional_fields() {
            if let Some(value) = value
                && (value.len() > MAX_FIELD_LEN || value.contains('\0'))
            {
                return Err(PayloadError::BadField(field));
            }
        }
        let base =
            url::Url::parse(&payload.base_url).map_err(|_| PayloadError::BadField("baseUrl"))?;
        if !matches!(base.scheme(), "https" | "http") || base.host_str().is_none() {
            return Err(PayloadError::BadField("baseUrl"));
        }
        if let Some(secret) = &payload.shared_secret
            && (secret.is_empty() || secret.len() > MAX_SHARED_SECRET_LEN || has_control(secret))
        {
            return Err(PayloadError::BadField("sharedSecret"));
        }
        Ok(payload)
    }

    /// The optional text fields, by their JSON names.
    fn optional_fields(&self) -> [(&'static str, Option<&str>); 11] {
        [
            ("displayUrl", self.display_url.as_deref()),
            (
                "displayUrlServicedeskHelpCenter",
                self.display_url_servicedesk_help_center.as_deref(),
            ),
            ("productType", self.product_type.as_deref()),
            ("description", self.description.as_deref()),
            ("serverVersion", self.server_version.as_deref()),
            ("pluginsVersion", self.plugins_version.as_deref()),
            ("oauthClientId", self.oauth_client_id.as_deref()),
            ("installationId", self.installation_id.as_deref()),
            ("entitlementId", self.entitlement_id.as_deref()),
            ("entitlementNumber", self.entitlement_number.as_deref()),
            (
                "serviceEntitlementNumber",
                self.service_entitlement_number.as_deref(),
            ),
        ]
    }

    /// The host of `baseUrl`, lower case.
    pub fn base_url_host(&self) -> Option<String> {
        url::Url::parse(&self.base_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
    }
}

/// The lifecycle body as it may travel on Kafka: the same JSON without `sharedSecret`.
pub fn redact_shared_secret(body: &[u8]) -> Result<Vec<u8>, PayloadError> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| PayloadError::Invalid(e.to_string()))?;
    if let Value::Object(map) = &mut value {
        map.remove("sharedSecret");
    }
    serde_json::to_vec(&value).map_err(|e| PayloadError::Invalid(e.to_string()))
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_full_install_and_ignores_unknown_fields() {
        let body = br#"{"key":"app","clientKey":"ck","sharedSecret":"s3cret","baseUrl":"https://acme.atlassian.net/wiki",
            "displayUrl":"https://wiki.acme.com","productType":"confluence","eventType":"installed",
            "entitlementNumber":42,"brandNew":{"x":1}}"#;
        let p = LifecyclePayload::parse(body).expect("parses");
        assert_eq!(p.event_type, LifecycleEventType::Installed);
        assert_eq!(p.entitlement_number.as_deref(), Some("42"));
        assert_eq!(p.base_url_host().as_deref(), Some("acme.atlassian.net"));
    }

    #[test]
    fn redaction_removes_only_the_secret() {
        let out =
            redact_shared_secret(br#"{"clientKey":"ck","sharedSecret":"s3cret"}"#).expect("json");
        let text = String::from_utf8(out).expect("utf8");
        assert!(!text.contains("s3cret"));
        assert!(text.contains("\"clientKey\":\"ck\""));
    }

    #[test]
    fn rejects_missing_fields_and_bad_urls() {
        assert!(
            LifecyclePayload::parse(
                br#"{"key":"a","baseUrl":"https://x","eventType":"installed"}"#
            )
            .is_err()
        );
        assert!(
            LifecyclePayload::parse(
                br#"{"key":"a","clientKey":"c","baseUrl":"file:///etc","eventType":"installed"}"#
            )
            .is_err()
        );
        assert!(
            LifecyclePayload::parse(
                br#"{"key":"a","clientKey":"c","baseUrl":"https://x","eventType":"exploded"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn control_characters_and_oversize_values_are_refused_by_field() {
        let body = |field: &str, value: serde_json::Value| {
            let mut body = serde_json::json!({"key":"app","clientKey":"ck","sharedSecret":"s",
                "baseUrl":"https://acme.atlassian.net/wiki","eventType":"installed"});
            body[field] = value;
            serde_json::to_vec(&body).expect("json")
        };
        let cases = [
            ("clientKey", serde_json::json!("ck\u{0}x"), "clientKey"),
            ("clientKey", serde_json::json!("k".repeat(257)), "clientKey"),
            ("clientKey", serde_json::json!("ck\nx"), "clientKey"),
            ("key", serde_json::json!("app\u{1}"), "key"),
            (
                "baseUrl",
                serde_json::json!("https://acme.atlassian.net/\u{0}"),
                "baseUrl",
            ),
            ("sharedSecret", serde_json::json!("s\u{0}"), "sharedSecret"),
            ("description", serde_json::json!("a\u{0}b"), "description"),
            (
                "displayUrl",
                serde_json::json!("d".repeat(MAX_FIELD_LEN + 1)),
                "displayUrl",
            ),
        ];
        for (field, value, expected) in cases {
            assert_eq!(
                LifecyclePayload::parse(&body(field, value.clone())),
                Err(PayloadError::BadField(expected)),
                "{field} = {value}"
            );
        }
        let multi_line = body("description", serde_json::json!("line one\nline two"));
        assert!(LifecyclePayload::parse(&multi_line).is_ok());
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = LifecyclePayload::parse(&body);
            let _ = redact_shared_secret(&body);
        }
    }
}
