//! The deployment files: compose wiring, Prometheus config and rules, dashboards.
//!
//! No Docker engine runs where the tests run, so what can be checked without one is checked
//! here: `docker-compose config` must accept the file, every Tributary service must carry
//! settings that load and that name addresses existing in the compose network, and the
//! Prometheus files must pass `promtool`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde_norway::Value;
use tributary_common::Config;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tool(name: &str, package: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is missing: apt-get install {package} (.ci/run does this)"
    );
    Command::new(name)
}

/// The compose file as `docker-compose config` resolves it (anchors, merges, variables).
fn resolved_compose() -> Value {
    let out = tool("docker-compose", "docker-compose")
        .current_dir(root())
        .args(["-f", "docker-compose.yml", "config"])
        .env("TRIBUTARY_APP_KEY", "com.example.compose-check")
        .env("TRIBUTARY_APP_BASE_URL", "https://tunnel.example.com")
        .env(
            "TRIBUTARY_SECRET_KEY",
            tributary_devkit::test_secret_key_base64(),
        )
        .output()
        .expect("docker-compose runs");
    assert!(
        out.status.success(),
        "docker-compose config refused the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_norway::from_slice(&out.stdout).expect("docker-compose prints YAML")
}

fn services(compose: &Value) -> BTreeMap<String, Value> {
    compose["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), v.clone()))
        .collect()
}

fn environment(service: &Value) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Mapping(map) => map
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => String::new(),
                };
                (k.as_str().unwrap_or_default().to_string(), value)
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn is_tributary(service: &Value) -> bool {
    service["image"].as_str() == Some("tributary:local")
}

#[test]
fn docker_compose_accepts_the_stack_and_fails_without_the_secret_key() {
    resolved_compose();
    let out = tool("docker-compose", "docker-compose")
        .current_dir(root())
        .args(["-f", "docker-compose.yml", "config"])
        .env_remove("TRIBUTARY_SECRET_KEY")
        .env("TRIBUTARY_APP_KEY", "x")
        .env("TRIBUTARY_APP_BASE_URL", "https://x.example.com")
        .output()
        .expect("docker-compose runs");
    assert!(
        !out.status.success(),
        "a missing secret key must stop compose"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("TRIBUTARY_SECRET_KEY"));
}

#[test]
fn every_tributary_service_is_wired_to_what_exists() {
    let compose = resolved_compose();
    let services = services(&compose);
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    for required in [
        "postgres",
        "kafka",
        "kafka-topics",
        "migrate",
        "ingest",
        "processor",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(required), "service {required} is missing");
    }
    let declared_volumes: BTreeSet<String> = compose["volumes"]
        .as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();

    let mut tributary_services = 0;
    for (name, service) in &services {
        for dependency in service["depends_on"]
            .as_mapping()
            .into_iter()
            .flat_map(|m| m.keys())
        {
            let dependency = dependency.as_str().unwrap_or_default();
            assert!(
                names.contains(dependency),
                "{name} depends on unknown service {dependency}"
            );
        }
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let spec = volume.as_str().unwrap_or_default();
            let source = spec.split(':').next().unwrap_or_default();
            if source.starts_with('/') {
                assert!(
                    PathBuf::from(source).exists(),
                    "{name} mounts missing path {source}"
                );
            } else {
                assert!(
                    declared_volumes.contains(source),
                    "{name} uses undeclared volume {source}"
                );
            }
        }
        if !is_tributary(service) {
            continue;
        }
        tributary_services += 1;
        let env = environment(service);
        // The settings must load exactly as the service would load them.
        let config = Config::load_from(None, env.clone())
            .unwrap_or_else(|e| panic!("{name}: its environment does not load: {e}"));
        let db = url::Url::parse(&config.database_url.0).expect("database url");
        let db_host = db.host_str().unwrap_or_default();
        assert!(
            names.contains(db_host),
            "{name}: database host {db_host} is not a service"
        );
        assert_eq!(db.port(), Some(5432));
        for broker in config.kafka_brokers.split(',') {
            let (host, port) = broker.trim().rsplit_once(':').expect("host:port");
            assert!(
                names.contains(host),
                "{name}: broker host {host} is not a service"
            );
            let kafka_env = environment(&services["kafka"]);
            let advertised = kafka_env
                .iter()
                .find(|(k, _)| k == "KAFKA_ADVERTISED_LISTENERS")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            assert!(
                advertised.contains(&format!("{host}:{port}")),
                "{name}: kafka does not advertise {broker}"
            );
        }
        config.secret_keyring().expect("secret key is set");
        assert_eq!(
            config.metrics_listen, "0.0.0.0:9464",
            "{name}: metrics port the scrape config expects"
        );
        if name == "ingest" {
            let ports: Vec<String> = service["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{}:{}",
                        p["published"].as_u64().unwrap_or(0),
                        p["target"].as_u64().unwrap_or(0)
                    )
                })
                .collect();
            assert!(
                ports.contains(&"8080:8080".to_string()),
                "ingest publishes 8080: {ports:?}"
            );
            assert!(config.ingest_listen.ends_with(":8080"));
        }
        if name == "processor" {
            // The topics the one-shot creates must include what processors read and dead-letter to.
            let create =
                serde_norway::to_string(&services["kafka-topics"]["command"]).unwrap_or_default();
            for topic in &config.processor_topics {
                assert!(
                    create.contains(topic.as_str()),
                    "topic {topic} is not created"
                );
                let dlq = config.dead_letter_topic(topic);
                assert!(
                    create.contains(&dlq),
                    "dead-letter topic {dlq} is not created"
                );
            }
            assert_eq!(
                services["processor"]["deploy"]["replicas"].as_u64(),
                Some(2),
                "two processor replicas in one group"
            );
        }
    }
    assert_eq!(
        tributary_services, 3,
        "migrate, ingest and processor run the Tributary image"
    );
}

#[test]
fn prometheus_scrapes_the_services_on_their_metrics_port() {
    let text = std::fs::read_to_string(root().join("deploy/prometheus/prometheus.yml"))
        .expect("prometheus.yml");
    let config: Value = serde_norway::from_str(&text).expect("yaml");
    let jobs: Vec<&Value> = config["scrape_configs"]
        .as_sequence()
        .expect("scrape configs")
        .iter()
        .collect();
    let ingest = jobs
        .iter()
        .find(|j| j["job_name"] == "tributary-ingest")
        .expect("ingest job");
    assert_eq!(
        ingest["static_configs"][0]["targets"][0].as_str(),
        Some("ingest:9464")
    );
    let processor = jobs
        .iter()
        .find(|j| j["job_name"] == "tributary-processor")
        .expect("processor job");
    assert_eq!(
        processor["dns_sd_configs"][0]["names"][0].as_str(),
        Some("processor")
    );
    assert_eq!(processor["dns_sd_configs"][0]["port"].as_u64(), Some(9464));
}

#[test]
fn promtool_accepts_the_config_and_rules_and_the_rule_tests_pass() {
    let dir = root().join("deploy/prometheus");
    for args in [
        vec!["check", "config", "prometheus.yml"],
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts_test.yml"],
    ] {
        let out = tool("promtool", "prometheus")
            .current_dir(&dir)
            .args(&args)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn grafana_provisioning_points_at_the_mounted_dashboards() {
    let provider: Value = serde_norway::from_str(
        &std::fs::read_to_string(
            root().join("deploy/grafana/provisioning/dashboards/tributary.yml"),
        )
        .expect("provider"),
    )
    .expect("yaml");
    assert_eq!(
        provider["providers"][0]["options"]["path"].as_str(),
        Some("/var/lib/grafana/dashboards")
    );
    let compose = std::fs::read_to_string(root().join("docker-compose.yml")).expect("compose");
    assert!(compose.contains("./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro"));
    assert!(compose.contains("./deploy/grafana/provisioning:/etc/grafana/provisioning:ro"));
    for dashboard in dashboards() {
        let uid = dashboard["uid"].as_str().unwrap_or_default();
        assert!(uid.starts_with("tributary-"), "dashboard uid {uid}");
        assert!(
            !panel_queries(&dashboard).is_empty(),
            "dashboard {uid} has queries"
        );
    }
}

/// Every dashboard in deploy/grafana/dashboards.
pub fn dashboards() -> Vec<serde_json::Value> {
    let dir = root().join("deploy/grafana/dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("dashboards dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            out.push(
                serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json"),
            );
        }
    }
    assert_eq!(
        out.len(),
        3,
        "ingest, processor and Confluence REST dashboards"
    );
    out
}

/// (panel title, PromQL) for every target of every panel.
pub fn panel_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_string();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| t["expr"].as_str().map(|e| (title.clone(), e.to_string())))
        })
        .collect()
}

#[test]
fn dashboard_and_alert_metrics_are_names_the_code_exports() {
    let mut sources = String::new();
    for dir in ["common/src", "ingest/src", "processor/src"] {
        collect_rust(&root().join(dir), &mut sources);
    }
    let alerts =
        std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).expect("alerts");
    let mut queries: Vec<String> = dashboards()
        .iter()
        .flat_map(panel_queries)
        .map(|(_, q)| q)
        .collect();
    queries.push(alerts);
    for query in queries {
        for name in metric_names(&query) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                sources.contains(&format!("\"{base}\"")),
                "`{base}` is not exported by any service"
            );
        }
    }
}

fn metric_names(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(start) = rest.find("tributary_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn collect_rust(dir: &std::path::Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rust(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
}
