//! The real binaries start, explain themselves, load configuration and fail clearly.

use tributary_devkit::TestDatabase;
use tributary_devkit::harness::run;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_binary_answers_help() {
    for name in ["tributary", "tributary-ingest", "tributary-processor"] {
        let out = run(name, &["--help"], &[]);
        assert!(
            out.status.success(),
            "{name} --help failed: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains("--config"),
            "{name} --help names --config"
        );
    }
}

#[test]
fn a_bad_setting_is_named_and_the_exit_code_is_nonzero() {
    for name in ["tributary-ingest", "tributary-processor"] {
        let out = run(name, &[], &[("TRIBUTARY_JWT_LEEWAY_SECONDS", "soon")]);
        assert!(!out.status.success(), "{name} accepted a bad setting");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("TRIBUTARY_JWT_LEEWAY_SECONDS"),
            "{name}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
}

#[test]
fn config_prints_effective_settings_without_secrets() {
    let key = tributary_devkit::test_secret_key_base64();
    let out = run(
        "tributary",
        &["config"],
        &[
            ("TRIBUTARY_SECRET_KEY", &key),
            ("TRIBUTARY_APP_KEY", "com.acme.x"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("com.acme.x"));
    assert!(!stdout.contains(&key), "the secret key is redacted");
}

#[tokio::test]
async fn migrate_creates_the_database_and_is_idempotent() {
    let db = TestDatabase::create().await;
    // A database that does not exist yet: `migrate` creates it.
    let fresh_url =
        tributary_devkit::replace_database(&db.url, &format!("{}_fresh", db_name(&db.url)));
    for _ in 0..2 {
        let out = run(
            "tributary",
            &["migrate"],
            &[("TRIBUTARY_DATABASE_URL", &fresh_url)],
        );
        assert!(
            out.status.success(),
            "migrate failed: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stdout).contains("migrations applied"));
    }
    let pool = sqlx::PgPool::connect(&fresh_url)
        .await
        .expect("connect to migrated database");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .expect("migration table");
    assert_eq!(
        applied as usize,
        tributary_common::store::MIGRATOR.iter().count()
    );
    pool.close().await;
    let admin = sqlx::PgPool::connect(&tributary_devkit::admin_database_url())
        .await
        .expect("admin");
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS {}_fresh WITH (FORCE)",
        db_name(&db.url)
    ))
    .execute(&admin)
    .await
    .expect("drop fresh database");
}

#[test]
fn tenants_list_on_an_empty_database() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(TestDatabase::create());
    let key = tributary_devkit::test_secret_key_base64();
    let out = run(
        "tributary",
        &["tenants", "list"],
        &[
            ("TRIBUTARY_DATABASE_URL", &db.url),
            ("TRIBUTARY_SECRET_KEY", &key),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("0 tenant(s)"));
    let out = run(
        "tributary",
        &["tenants", "list"],
        &[("TRIBUTARY_DATABASE_URL", &db.url)],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("secret_key"),
        "missing key is named"
    );
}

#[test]
fn tenants_list_shows_quota_pauses_and_parked_events() {
    use tributary_common::connect::LifecyclePayload;
    use tributary_common::store::{
        Database, ParkedEvent, ParkedStore, Pause, PauseScope, PauseStore, TenantStore,
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(TestDatabase::create());
    let store = Database::Postgres(db.pool.clone());
    let now_ms = chrono::Utc::now().timestamp_millis();
    rt.block_on(async {
        for tenant in ["acme", "globex"] {
            let install = LifecyclePayload::parse(
                serde_json::json!({
                    "key": "com.example.tributary", "clientKey": tenant,
                    "sharedSecret": "s3cret-s3cret-s3cret-s3cret-s3cret",
                    "baseUrl": format!("https://{tenant}.atlassian.net/wiki"),
                    "eventType": "installed",
                })
                .to_string()
                .as_bytes(),
            )
            .expect("install body");
            TenantStore::new(store.clone(), tributary_devkit::test_keyring())
                .record_install(&install, "ingest-install")
                .await
                .expect("installed");
        }
        PauseStore::new(store.clone())
            .pause(&Pause {
                scope: PauseScope::Tenant,
                client_key: "acme".into(),
                until_ms: now_ms + 300_000,
                reason: "confluence-quota-tenant-based".into(),
            })
            .await
            .expect("paused");
        let parked = |offset| ParkedEvent {
            topic: "tributary.events".into(),
            partition: 0,
            offset,
            key: b"acme".to_vec(),
            payload: Some(b"{}".to_vec()),
            headers: Vec::new(),
            timestamp_ms: None,
            client_key: "acme".into(),
            resume_handler: None,
            retries_used: 1,
            due_at_ms: now_ms + 300_000,
            last_error: "429".into(),
            parked_at_ms: now_ms,
        };
        ParkedStore::new(store.clone())
            .park(&[parked(7), parked(8)])
            .await
            .expect("parked");
    });
    let key = tributary_devkit::test_secret_key_base64();
    let env = [
        ("TRIBUTARY_DATABASE_URL", db.url.as_str()),
        ("TRIBUTARY_SECRET_KEY", key.as_str()),
    ];
    let out = run("tributary", &["tenants", "list"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let line = |tenant: &str| {
        table
            .lines()
            .find(|l| l.starts_with(tenant))
            .unwrap_or_else(|| panic!("no {tenant} in:\n{table}"))
            .to_string()
    };
    let until = chrono::DateTime::from_timestamp_millis(now_ms + 300_000)
        .expect("time")
        .format("%Y-%m-%d %H:%M")
        .to_string();
    assert!(line("acme").contains(&until), "{table}");
    assert!(line("acme").split_whitespace().any(|w| w == "2"), "{table}");
    assert!(!line("globex").contains(&until), "{table}");

    let out = run("tributary", &["tenants", "list", "--json"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let acme = lines
        .iter()
        .find(|t| t["client_key"] == "acme")
        .expect("acme listed");
    assert_eq!(acme["parked_events"], 2);
    assert_eq!(
        acme["confluence_pause"],
        "tenant: confluence-quota-tenant-based"
    );
    let globex = lines
        .iter()
        .find(|t| t["client_key"] == "globex")
        .expect("globex listed");
    assert_eq!(globex["parked_events"], 0);
    assert!(globex["confluence_pause"].is_null());
}

fn db_name(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().to_string()
}
