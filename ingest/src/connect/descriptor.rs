//! The app descriptor, and the routes it advertises: both come from here, so what
//! Confluence is told and what the ingest accepts cannot drift apart.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};
use tributary_common::Config;
use tributary_common::connect::LifecycleEventType;
use tributary_common::connect::events::{CONFLUENCE_WEBHOOK_EVENTS, is_valid_event_name};

pub const DESCRIPTOR_PATH: &str = "/atlassian-connect.json";
pub const WEBHOOK_ROUTE: &str = "/webhooks/{event}";

pub fn lifecycle_path(kind: LifecycleEventType) -> String {
    format!("/lifecycle/{}", kind.as_str())
}

pub fn webhook_path(event: &str) -> String {
    format!("/webhooks/{event}")
}

#[derive(Debug, thiserror::Error)]
#[error(
    "invalid setting `ingest_webhook_events` (TRIBUTARY_INGEST_WEBHOOK_EVENTS): `{0}` is not an event name (lower-case letters, digits and _)"
)]
pub struct InvalidEventName(String);

/// The webhook events the app subscribes to: the configured ones, or every Confluence event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvents {
    names: BTreeSet<String>,
}

impl WebhookEvents {
    pub fn from_config(config: &Config) -> Result<Self, InvalidEventName> {
        let names: BTreeSet<String> = if config.ingest_webhook_events.is_empty() {
            CONFLUENCE_WEBHOOK_EVENTS
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            config
                .ingest_webhook_events
                .iter()
                .map(|name| name.trim().to_string())
                .collect()
        };
        if let Some(bad) = names.iter().find(|name| !is_valid_event_name(name)) {
            return Err(InvalidEventName(bad.clone()));
        }
        Ok(WebhookEvents { names })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

/// The descriptor Confluence installs the app from.
pub fn descriptor(config: &Config, events: &WebhookEvents) -> Value {
    let lifecycle: Map<String, Value> = LifecycleEventType::ALL
        .into_iter()
        .map(|kind| (kind.as_str().to_string(), Value::from(lifecycle_path(kind))))
        .collect();
    let webhooks: Vec<Value> = events
        .iter()
        .map(|event| json!({ "event": event, "url": webhook_path(event) }))
        .collect();
    let mut descriptor = json!({
        "key": config.app_key,
        "name": config.app_name,
        "description": config.app_description,
        "baseUrl": config.app_base_url.trim_end_matches('/'),
        "authentication": { "type": "jwt" },
        "apiMigrations": { "signed-install": true, "context-qsh": true },
        "scopes": config.app_scopes.iter().map(|s| s.to_ascii_uppercase()).collect::<Vec<_>>(),
        "lifecycle": lifecycle,
        "modules": { "webhooks": webhooks },
    });
    let regions = config.region_base_urls();
    if !regions.is_empty()
        && let Some(object) = descriptor.as_object_mut()
    {
        object.insert("regionBaseUrls".into(), json!(regions));
    }
    descriptor
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(env: &[(&str, &str)]) -> Config {
        Config::load_from(
            None,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .expect("config")
    }

    #[test]
    fn every_confluence_event_by_default() {
        let config = config(&[]);
        let events = WebhookEvents::from_config(&config).expect("valid");
        let descriptor = descriptor(&config, &events);
        let hooks = descriptor["modules"]["webhooks"]
            .as_array()
            .expect("webhooks");
        assert_eq!(hooks.len(), CONFLUENCE_WEBHOOK_EVENTS.len());
        assert!(hooks.contains(&json!({"event": "page_created", "url": "/webhooks/page_created"})));
        assert_eq!(descriptor["authentication"]["type"], "jwt");
        assert_eq!(descriptor["apiMigrations"]["signed-install"], true);
        assert_eq!(descriptor["lifecycle"]["installed"], "/lifecycle/installed");
        assert!(descriptor.get("regionBaseUrls").is_none());
    }

    #[test]
    fn configured_events_and_regions() {
        let config = config(&[
            (
                "TRIBUTARY_INGEST_WEBHOOK_EVENTS",
                "page_created,comment_created",
            ),
            (
                "TRIBUTARY_APP_REGION_BASE_URLS",
                "EU=https://eu.app.example.com",
            ),
        ]);
        let events = WebhookEvents::from_config(&config).expect("valid");
        assert!(events.contains("page_created"));
        assert!(!events.contains("page_viewed"));
        let descriptor = descriptor(&config, &events);
        assert_eq!(
            descriptor["modules"]["webhooks"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(
            descriptor["regionBaseUrls"]["EU"],
            "https://eu.app.example.com"
        );
    }

    #[test]
    fn unsafe_event_names_are_refused() {
        let config = config(&[("TRIBUTARY_INGEST_WEBHOOK_EVENTS", "../admin")]);
        let err = WebhookEvents::from_config(&config).expect_err("refused");
        assert!(err.to_string().contains("ingest_webhook_events"));
    }
}
