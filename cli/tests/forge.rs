//! `tributary forge manifest` as an operator runs it: the built binary, configured from the
//! environment only, printing a fragment Forge accepts once merged into `manifest.yml`.

use std::process::Command;

use serde_norway::Value;
use tributary_common::Config;

const APP_ID: &str = "ari:cloud:ecosystem::app/3f1c2b9a-6d4e-4c2b-9a1f-0e8d7c6b5a49";

fn manifest(env: &[(&str, &str)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tributary"));
    command.args(["forge", "manifest"]);
    for (name, _) in std::env::vars() {
        if name.starts_with("TRIBUTARY_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let output = command.output().expect("the tributary binary runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn forge_manifest_prints_a_fragment_whose_trigger_endpoint_and_remote_link_up() {
    let text = manifest(&[
        (
            "TRIBUTARY_APP_BASE_URL",
            "https://apps.example.com/tributary/",
        ),
        ("TRIBUTARY_FORGE_APP_ID", APP_ID),
    ]);
    assert!(text.contains(APP_ID), "{text}");
    let yaml: Value = serde_norway::from_str(&text).expect("the fragment is YAML");
    let trigger = &yaml["modules"]["trigger"][0];
    let endpoint = &yaml["modules"]["endpoint"][0];
    let remote = &yaml["remotes"][0];
    // Forge resolves trigger -> endpoint -> remote by key: a broken link is a manifest
    // Forge refuses to deploy.
    assert_eq!(trigger["endpoint"], endpoint["key"], "{text}");
    assert_eq!(endpoint["remote"], remote["key"], "{text}");
    assert_eq!(endpoint["route"]["path"].as_str(), Some("/forge/events"));
    assert_eq!(
        endpoint["auth"]["appSystemToken"]["enabled"].as_bool(),
        Some(true)
    );
    assert_eq!(
        remote["baseUrl"].as_str(),
        Some("https://apps.example.com/tributary")
    );

    let defaults = Config::defaults().expect("defaults");
    assert_eq!(strings(&trigger["events"]), defaults.forge_events);
    assert!(
        strings(&trigger["events"]).contains(&"avi:forge:uninstalled:app".to_string()),
        "the default trigger sees uninstalls"
    );
    assert_eq!(
        strings(&yaml["permissions"]["scopes"]),
        defaults.forge_scopes
    );
}

#[test]
fn forge_manifest_takes_the_configured_events_and_warns_without_an_app_id() {
    let text = manifest(&[
        ("TRIBUTARY_APP_BASE_URL", "https://apps.example.com"),
        (
            "TRIBUTARY_FORGE_EVENTS",
            "avi:forge:installed:app,avi:confluence:created:comment",
        ),
    ]);
    assert!(text.contains("TRIBUTARY_FORGE_APP_ID is not set"), "{text}");
    let yaml: Value = serde_norway::from_str(&text).expect("the fragment is YAML");
    assert_eq!(
        strings(&yaml["modules"]["trigger"][0]["events"]),
        ["avi:forge:installed:app", "avi:confluence:created:comment"]
    );
}
