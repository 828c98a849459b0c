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

fn db_name(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().to_string()
}
