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

/// `docker-compose config` on the compose file with only `env` in its environment and an
/// empty env file, so no `.env` of the working copy and no variable of the caller counts.
fn compose_config(profile: Option<&str>, env: &[(&str, &str)]) -> Result<Value, String> {
    let empty_env_file = std::env::temp_dir().join(format!(
        "tributary-compose-{}.env",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&empty_env_file, "").expect("write an empty env file");
    let mut command = tool("docker-compose", "docker-compose");
    command
        .current_dir(root())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .arg("--env-file")
        .arg(&empty_env_file);
    if let Some(profile) = profile {
        command.args(["--profile", profile]);
    }
    let out = command
        .args(["-f", "docker-compose.yml", "config"])
        .output()
        .expect("docker-compose runs");
    let _ = std::fs::remove_file(&empty_env_file);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_norway::from_slice(&out.stdout).expect("docker-compose prints YAML"))
}

/// The values of `.env.example`, with a real secret key filled in: a deployment's `.env`.
fn filled_in_env_example() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join(".env.example")).expect(".env.example");
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| {
            let value = if k == "TRIBUTARY_SECRET_KEY" && v.is_empty() {
                tributary_devkit::test_secret_key_base64()
            } else {
                v.to_string()
            };
            (k.to_string(), value)
        })
        .collect()
}

/// The compose file as a filled-in `.env` resolves it (anchors, merges, variables).
fn resolved_compose() -> Value {
    let env = filled_in_env_example();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    compose_config(None, &pairs)
        .unwrap_or_else(|e| panic!("docker-compose config refused the file: {e}"))
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

fn env_value(service: &Value, name: &str) -> Option<String> {
    environment(service)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn command_args(service: &Value) -> Vec<String> {
    service["command"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

/// The value of `--name=value` in a service's command.
fn flag(service: &Value, name: &str) -> Option<String> {
    let prefix = format!("--{name}=");
    command_args(service)
        .iter()
        .find_map(|a| a.strip_prefix(&prefix).map(str::to_string))
}

/// `source:target` named-volume mounts of a service.
fn mounts(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let mut parts = v.as_str()?.split(':');
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

#[test]
fn docker_compose_accepts_the_stack_with_no_env_and_runs_on_development_defaults() {
    let compose = compose_config(None, &[])
        .unwrap_or_else(|e| panic!("docker-compose config needs nothing set: {e}"));
    let services = services(&compose);
    let defaults = Config::defaults().expect("defaults");
    let ingest = &services["ingest"];
    assert_eq!(
        env_value(ingest, "TRIBUTARY_APP_KEY"),
        Some(defaults.app_key.clone())
    );
    assert_eq!(
        env_value(ingest, "TRIBUTARY_APP_BASE_URL"),
        Some(defaults.app_base_url.clone())
    );
    assert_eq!(
        env_value(ingest, "TRIBUTARY_SECRET_KEY").as_deref(),
        Some("")
    );

    // The one-shot writes the key where every service reads it: the same file, on the same
    // named volume, and the services wait for it.
    let key_file = env_value(ingest, "TRIBUTARY_SECRET_KEY_FILE").expect("a key file");
    let init = &services["dev-key"];
    assert!(
        command_args(init).contains(&key_file),
        "dev-key writes {key_file}"
    );
    let volume_of = |service: &Value| {
        mounts(service)
            .into_iter()
            .find(|(_, target)| key_file.starts_with(target.as_str()))
            .map(|(source, _)| source)
    };
    let key_volume = volume_of(init).expect("dev-key mounts a volume for the key");
    for name in ["migrate", "ingest", "processor", "demo-app"] {
        let service = &services[name];
        assert_eq!(
            env_value(service, "TRIBUTARY_SECRET_KEY_FILE"),
            Some(key_file.clone())
        );
        assert_eq!(
            volume_of(service),
            Some(key_volume.clone()),
            "{name} mounts the key"
        );
        assert_eq!(
            service["depends_on"]["dev-key"]["condition"].as_str(),
            Some("service_completed_successfully"),
            "{name} waits for the key"
        );
    }

    // What dev-key does, run here: a loud development key, then the services' settings load
    // with it as they are.
    let dir = std::env::temp_dir().join(format!("tributary-dev-key-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("key dir");
    let file = dir.join("secret-key");
    let path = file.display().to_string();
    let out = tributary_devkit::harness::run("tributary", &["dev-key", &path], &[]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("GENERATED") && said.contains("DEVELOPMENT key"),
        "{said}"
    );
    assert!(
        said.contains("TRIBUTARY_SECRET_KEY"),
        "says how to set a real one: {said}"
    );
    let again = tributary_devkit::harness::run("tributary", &["dev-key", &path], &[]);
    assert!(
        !String::from_utf8_lossy(&again.stdout).contains("GENERATED"),
        "made once"
    );
    for name in ["migrate", "ingest", "processor"] {
        let mut env = environment(&services[name]);
        for (key, value) in env.iter_mut() {
            if key == "TRIBUTARY_SECRET_KEY_FILE" {
                *value = path.clone();
            }
        }
        let config = Config::load_from(None, env)
            .unwrap_or_else(|e| panic!("{name}: its development settings do not load: {e}"));
        config
            .secret_keyring()
            .expect("the development key is read");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_demo_profile_adds_a_simulated_confluence_the_ingest_trusts() {
    let compose = compose_config(Some("demo"), &[])
        .unwrap_or_else(|e| panic!("docker-compose config refused the demo profile: {e}"));
    let services = services(&compose);
    for (name, service) in &services {
        let profiles = serde_norway::to_string(&service["profiles"]).unwrap_or_default();
        if name.starts_with("demo-") {
            assert!(profiles.contains("demo"), "{name} is in the demo profile");
        } else {
            assert!(!profiles.contains("demo"), "{name} runs without a profile");
        }
    }
    let site = &services["demo-site"];
    let public = flag(site, "public-url").expect("demo-site --public-url");
    let site_host = url::Url::parse(&public)
        .expect("a URL")
        .host_str()
        .expect("a host")
        .to_string();
    assert!(
        services.contains_key(&site_host),
        "{site_host} is the demo-site service"
    );
    let key_port = flag(site, "key-server-listen")
        .and_then(|l| l.rsplit_once(':').map(|(_, p)| p.to_string()))
        .expect("demo-site --key-server-listen");
    let ingest = Config::load_from(
        None,
        environment(&services["ingest"]).into_iter().chain([(
            "TRIBUTARY_SECRET_KEY".to_string(),
            tributary_devkit::test_secret_key_base64(),
        )]),
    )
    .expect("ingest settings");
    assert!(
        ingest
            .install_keys_url
            .contains(&format!("http://{site_host}:{key_port}")),
        "the ingest trusts the demo key server: {:?}",
        ingest.install_keys_url
    );
    assert!(
        ingest.tenant_allowlist().allows(&site_host),
        "demo tenants are allowed"
    );
    assert!(flag(site, "ingest").is_some_and(|u| u.starts_with("http://ingest:8080")));
    assert_eq!(
        env_value(site, "TRIBUTARY_APP_BASE_URL"),
        Some(ingest.app_base_url.clone()),
        "installs are signed for the ingest's audience"
    );
    let app = &services["demo-app"];
    assert_eq!(flag(app, "site-host"), Some(site_host));
    let group = env_value(app, "TRIBUTARY_PROCESSOR_GROUP_ID");
    assert!(
        group.is_some()
            && group != env_value(&services["processor"], "TRIBUTARY_PROCESSOR_GROUP_ID"),
        "the demo app consumes in a group of its own"
    );
}

#[test]
fn a_filled_in_env_file_replaces_every_development_default() {
    let env = filled_in_env_example();
    let compose = resolved_compose();
    let services = services(&compose);
    let ingest = Config::load_from(None, environment(&services["ingest"])).expect("loads");
    let given = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!(".env.example sets {name}"))
    };
    assert_eq!(ingest.app_base_url, given("TRIBUTARY_APP_BASE_URL"));
    assert_eq!(
        ingest.install_keys_url,
        vec![given("TRIBUTARY_INSTALL_KEYS_URL")]
    );
    assert_eq!(
        ingest.tenant_host_allowlist,
        vec![given("TRIBUTARY_TENANT_HOST_ALLOWLIST")]
    );
    assert!(!ingest.tenant_allowlist().allows("demo-site"));
    assert!(
        ingest.secret_keyring().is_ok(),
        "the given key, no file needed"
    );
    // The one-shot leaves the volume alone when a key is given.
    let dir = std::env::temp_dir().join(format!("tributary-dev-key-{}", uuid::Uuid::new_v4()));
    let file = dir.join("secret-key");
    let key = given("TRIBUTARY_SECRET_KEY");
    let out = tributary_devkit::harness::run(
        "tributary",
        &["dev-key", &file.display().to_string()],
        &[("TRIBUTARY_SECRET_KEY", &key)],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("TRIBUTARY_SECRET_KEY is set"));
    assert!(!file.exists(), "no development key is made");
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
        "dev-key",
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

    let (mut tributary_services, mut tributary_images) = (0, 0);
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
        tributary_images += 1;
        let env = environment(service);
        // The one-shot key maker and the simulated Confluence read no service settings.
        if !env.iter().any(|(k, _)| k == "TRIBUTARY_DATABASE_URL") {
            continue;
        }
        tributary_services += 1;
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
        tributary_services, 4,
        "migrate, ingest, processor and demo-app run on the Tributary settings"
    );
    assert_eq!(
        tributary_images, 6,
        "and dev-key and demo-site on the image too"
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
fn every_dashboard_panel_has_a_unique_id_and_a_numeric_place_on_the_grid() {
    for dashboard in dashboards() {
        let title = dashboard["title"].as_str().unwrap_or_default().to_string();
        let mut ids = std::collections::HashSet::new();
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            let name = panel["title"].as_str().unwrap_or_default();
            assert!(
                ids.insert(panel["id"].as_u64()),
                "{title}: panel `{name}` repeats an id or has none"
            );
            for field in ["x", "y", "w", "h"] {
                assert!(
                    panel["gridPos"][field].is_u64(),
                    "{title}: panel `{name}` has gridPos.{field} {}, not a number",
                    panel["gridPos"][field]
                );
            }
        }
    }
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
