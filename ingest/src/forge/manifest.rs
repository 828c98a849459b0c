//! The `manifest.yml` fragment that makes Forge deliver to this ingest: the Forge
//! counterpart of the Connect descriptor, rendered from the same settings.

use tributary_common::Config;

use super::EVENTS_PATH;

pub const TRIGGER_KEY: &str = "tributary-events";
pub const ENDPOINT_KEY: &str = "tributary-events-endpoint";
pub const REMOTE_KEY: &str = "tributary";

/// A YAML scalar: JSON's string syntax is YAML's double-quoted style, so every value is
/// quoted safely whatever characters it holds.
fn quoted(value: &str) -> String {
    serde_json::Value::String(value.to_string()).to_string()
}

/// The fragment: a trigger for the configured events sent to the `/forge/events` endpoint
/// (with the app system token), the remote at the app base URL, and the scopes.
pub fn manifest(config: &Config) -> String {
    let mut out = String::new();
    out.push_str("# Forge Remote for Tributary: merge into the app's manifest.yml.\n");
    if config.forge_enabled() {
        out.push_str(&format!(
            "# The ingest accepts invocation tokens for {}.\n",
            tributary_common::forge::app_ari(&config.forge_app_id)
        ));
    } else {
        out.push_str(
            "# TRIBUTARY_FORGE_APP_ID is not set: set it to this app's id, or the ingest refuses (404) every delivery.\n",
        );
    }
    out.push_str("modules:\n  trigger:\n");
    out.push_str(&format!("    - key: {}\n", quoted(TRIGGER_KEY)));
    out.push_str(&format!("      endpoint: {}\n", quoted(ENDPOINT_KEY)));
    out.push_str("      events:\n");
    for event in &config.forge_events {
        out.push_str(&format!("        - {}\n", quoted(event)));
    }
    out.push_str("  endpoint:\n");
    out.push_str(&format!("    - key: {}\n", quoted(ENDPOINT_KEY)));
    out.push_str(&format!("      remote: {}\n", quoted(REMOTE_KEY)));
    out.push_str("      route:\n");
    out.push_str(&format!("        path: {}\n", quoted(EVENTS_PATH)));
    out.push_str("      auth:\n        appSystemToken:\n          enabled: true\n");
    out.push_str("remotes:\n");
    out.push_str(&format!("  - key: {}\n", quoted(REMOTE_KEY)));
    out.push_str(&format!(
        "    baseUrl: {}\n",
        quoted(config.app_base_url.trim_end_matches('/'))
    ));
    out.push_str("permissions:\n  scopes:\n");
    for scope in &config.forge_scopes {
        out.push_str(&format!("    - {}\n", quoted(scope)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fragment_names_the_route_the_events_and_the_scopes() {
        let config = Config::load_from(
            None,
            [
                (
                    "TRIBUTARY_APP_BASE_URL".to_string(),
                    "https://apps.example.com/tributary/".to_string(),
                ),
                (
                    "TRIBUTARY_FORGE_APP_ID".to_string(),
                    "6a1b8ac2-4f5e-4a2b-9c47-2f9f8e7d6c5b".to_string(),
                ),
                (
                    "TRIBUTARY_FORGE_EVENTS".to_string(),
                    "avi:forge:installed:app,avi:confluence:created:page".to_string(),
                ),
            ],
        )
        .expect("config");
        let text = manifest(&config);
        for expected in [
            "        - \"avi:forge:installed:app\"\n        - \"avi:confluence:created:page\"\n",
            "        path: \"/forge/events\"\n",
            "        appSystemToken:\n          enabled: true\n",
            "    baseUrl: \"https://apps.example.com/tributary\"\n",
            "    - \"read:app-system-token\"\n",
            "ari:cloud:ecosystem::app/6a1b8ac2-4f5e-4a2b-9c47-2f9f8e7d6c5b",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }
}
