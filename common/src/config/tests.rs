use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn error_text(pairs: &[(&str, &str)]) -> String {
    Config::load_from(None, env(pairs))
        .expect_err("should fail")
        .to_string()
}

#[test]
fn defaults_load_and_every_documented_name_exists() {
    let config = Config::defaults().expect("defaults are valid");
    assert_eq!(config.ingest_listen, "0.0.0.0:8080");
    assert_eq!(config.jwt_leeway_seconds, 30);
    assert_eq!(
        config.topic_router().topic_for("page_created"),
        "tributary.events"
    );
    assert!(config.tenant_allowlist().allows("acme.atlassian.net"));
    assert!(config.secret_keyring().is_err(), "no secret key by default");
}

#[test]
fn environment_overrides_with_types_and_lists() {
    let key = tributary_devkit::test_secret_key_base64();
    let config = Config::load_from(
        None,
        env(&[
            ("TRIBUTARY_DATABASE_URL", "postgres://u@db:5432/x"),
            ("TRIBUTARY_KAFKA_BROKERS", "k1:9092,k2:9092"),
            ("TRIBUTARY_APP_KEY", "com.acme.app"),
            ("TRIBUTARY_APP_BASE_URL", "https://app.acme.com/connect"),
            ("TRIBUTARY_SECRET_KEY", &key),
            (
                "TRIBUTARY_INSTALL_KEYS_URL",
                "http://127.0.0.1:1, http://127.0.0.1:2",
            ),
            (
                "TRIBUTARY_TENANT_HOST_ALLOWLIST",
                "*.atlassian.net,127.0.0.1",
            ),
            ("TRIBUTARY_JWT_LEEWAY_SECONDS", "5"),
            ("TRIBUTARY_TOPIC_ROUTES", "*_viewed=views"),
            ("TRIBUTARY_INGEST_ALLOW_LEGACY_INSTALLS", "true"),
            ("TRIBUTARY_APP_REGION_BASE_URLS", "eu=https://eu.acme.com"),
            ("TRIBUTARY_SOMETHING_ELSE", "ignored"),
            ("UNRELATED", "x"),
        ]),
    )
    .expect("valid overrides");
    assert_eq!(config.database_url.0, "postgres://u@db:5432/x");
    assert_eq!(config.kafka_brokers, "k1:9092,k2:9092");
    assert_eq!(
        config.install_keys_url,
        vec!["http://127.0.0.1:1", "http://127.0.0.1:2"]
    );
    assert_eq!(config.jwt_leeway_seconds, 5);
    assert!(config.ingest_allow_legacy_installs);
    assert!(config.tenant_allowlist().allows("127.0.0.1"));
    assert_eq!(config.topic_router().topic_for("page_viewed"), "views");
    assert_eq!(config.app_base_path(), "/connect");
    assert!(config.secret_keyring().is_ok());
    assert_eq!(
        config.install_audiences(),
        vec![
            "https://app.acme.com/connect".to_string(),
            "https://eu.acme.com".to_string()
        ]
    );
    assert!(
        !format!("{config:?}").contains(&key),
        "the secret key never prints"
    );
}

#[test]
fn bad_values_name_the_setting() {
    assert!(
        error_text(&[("TRIBUTARY_JWT_LEEWAY_SECONDS", "soon")])
            .contains("TRIBUTARY_JWT_LEEWAY_SECONDS")
    );
    assert!(error_text(&[("TRIBUTARY_SECRET_KEY", "c2hvcnQ=")]).contains("secret_key"));
    assert!(error_text(&[("TRIBUTARY_APP_BASE_URL", "not a url")]).contains("app_base_url"));
    assert!(
        error_text(&[("TRIBUTARY_TENANT_HOST_ALLOWLIST", "*")]).contains("tenant_host_allowlist")
    );
    assert!(error_text(&[("TRIBUTARY_INGEST_LISTEN", "8080")]).contains("ingest_listen"));
    assert!(error_text(&[("TRIBUTARY_TOPIC_ROUTES", "no-equals")]).contains("topic_routes"));
    assert!(error_text(&[("TRIBUTARY_DATABASE_URL", "mysql://x")]).contains("database_url"));
    assert!(
        error_text(&[("TRIBUTARY_INGEST_ALLOW_LEGACY_INSTALLS", "perhaps")])
            .contains("ingest_allow_legacy_installs")
    );
    assert!(
        error_text(&[("TRIBUTARY_PROCESSOR_WORKER_THREADS", "100000")])
            .contains("processor_worker_threads")
    );
    assert!(
        error_text(&[("TRIBUTARY_INGEST_WORKER_THREADS", "1025")])
            .contains("ingest_worker_threads")
    );
}

#[test]
fn a_config_file_sits_between_defaults_and_environment() {
    let dir = std::env::temp_dir().join(format!("tributary-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("config.toml");
    std::fs::write(&path, "app_key = \"from-file\"\njwt_leeway_seconds = 7\ninstall_keys_url = [\"http://127.0.0.1:7\"]\n")
        .expect("write");
    let config = Config::load_from(Some(&path), env(&[("TRIBUTARY_JWT_LEEWAY_SECONDS", "9")]))
        .expect("valid");
    assert_eq!(
        (config.app_key.as_str(), config.jwt_leeway_seconds),
        ("from-file", 9)
    );
    assert_eq!(config.install_keys_url, vec!["http://127.0.0.1:7"]);

    std::fs::write(&path, "app_kee = \"typo\"\n").expect("write");
    let err = Config::load_from(Some(&path), env(&[]))
        .expect_err("unknown key")
        .to_string();
    assert!(err.contains("app_kee"), "{err}");
    std::fs::write(&path, "jwt_leeway_seconds = \"thirty\"\n").expect("write");
    let err = Config::load_from(Some(&path), env(&[]))
        .expect_err("wrong type")
        .to_string();
    assert!(err.contains("jwt_leeway_seconds"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_readme_documents_every_setting() {
    let readme = include_str!("../../../README.md");
    let defaults: Table = toml::from_str(DEFAULTS_TOML).expect("defaults parse");
    let missing: Vec<String> = defaults
        .keys()
        .map(|k| format!("`TRIBUTARY_{}`", k.to_ascii_uppercase()))
        .filter(|name| !readme.contains(name.as_str()))
        .collect();
    assert!(missing.is_empty(), "README lacks settings: {missing:?}");
}

#[test]
fn database_url_may_name_a_sqlite_file() {
    let config = Config::load_from(
        None,
        env(&[("TRIBUTARY_DATABASE_URL", "sqlite:tributary-dev.db")]),
    )
    .expect("a sqlite: URL is valid");
    assert_eq!(config.database_url.0, "sqlite:tributary-dev.db");
}

#[test]
fn the_secret_key_may_come_from_a_file_and_the_setting_wins_over_it() {
    let dir = std::env::temp_dir().join(format!("tributary-key-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("secret-key");
    let key = tributary_devkit::test_secret_key_base64();
    std::fs::write(&file, format!("{key}\n")).expect("write the key");
    let path = file.display().to_string();
    let from_file = Config::load_from(None, env(&[("TRIBUTARY_SECRET_KEY_FILE", &path)]))
        .expect("the key file loads");
    assert!(from_file.secret_keyring().is_ok());
    assert!(!format!("{from_file:?}").contains(&key), "still redacted");

    // An explicit key wins: the file is not even read.
    let missing = dir.join("missing").display().to_string();
    let explicit = Config::load_from(
        None,
        env(&[
            ("TRIBUTARY_SECRET_KEY", &key),
            ("TRIBUTARY_SECRET_KEY_FILE", &missing),
        ]),
    )
    .expect("the explicit key loads");
    assert!(explicit.secret_keyring().is_ok());

    let err = error_text(&[("TRIBUTARY_SECRET_KEY_FILE", &missing)]);
    assert!(err.contains("secret_key_file"), "{err}");
    std::fs::write(&file, "  \n").expect("empty the file");
    let err = error_text(&[("TRIBUTARY_SECRET_KEY_FILE", &path)]);
    assert!(err.contains("secret_key_file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_authorization_server_is_per_host_unless_one_is_configured() {
    let defaults = Config::defaults().expect("defaults are valid");
    assert_eq!(defaults.oauth_authorization_server_override(), None);
    let configured = Config::load_from(
        None,
        env(&[(
            "TRIBUTARY_OAUTH_AUTHORIZATION_SERVER_URL",
            "http://127.0.0.1:9000",
        )]),
    )
    .expect("a URL is accepted");
    assert_eq!(
        configured.oauth_authorization_server_override(),
        Some("http://127.0.0.1:9000")
    );
    assert!(
        error_text(&[("TRIBUTARY_OAUTH_AUTHORIZATION_SERVER_URL", "not a url")])
            .contains("oauth_authorization_server_url")
    );
}

#[test]
fn the_default_forge_trigger_has_every_lifecycle_event_and_the_readme_says_so() {
    use crate::forge::ForgeEvent;
    let defaults = Config::defaults().expect("defaults are valid");
    let readme = include_str!("../../../README.md");
    let row = readme
        .lines()
        .find(|line| line.starts_with("| `TRIBUTARY_FORGE_EVENTS` |"))
        .expect("the README's settings table has TRIBUTARY_FORGE_EVENTS");
    // A trigger without the uninstall never tells a default deployment of one.
    for lifecycle in [
        ForgeEvent::INSTALLED,
        ForgeEvent::UPGRADED,
        ForgeEvent::UNINSTALLED,
    ] {
        assert!(
            defaults.forge_events.iter().any(|e| e == lifecycle),
            "{lifecycle}"
        );
    }
    for event in &defaults.forge_events {
        assert!(
            row.contains(&format!("\"{event}\"")),
            "README lacks {event}"
        );
    }
}

#[test]
fn the_forge_deadline_stays_below_forges_invocation_timeout() {
    let defaults = Config::defaults().expect("defaults are valid");
    assert!(defaults.forge_deadline_ms < FORGE_INVOCATION_TIMEOUT_MS);
    assert!(defaults.forge_deadline_ms > 0);
    for bad in ["0", "5000", "9000"] {
        assert!(
            error_text(&[("TRIBUTARY_FORGE_DEADLINE_MS", bad)]).contains("forge_deadline_ms"),
            "{bad}"
        );
    }
}
