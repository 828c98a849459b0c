//! Tenant store against a real PostgreSQL database of the test's own.

use super::*;
use crate::connect::{LifecycleEventType, LifecyclePayload};
use crate::testing::{TestDatabase, test_keyring};

fn install_body(client_key: &str, secret: &str, base_url: &str) -> LifecyclePayload {
    LifecyclePayload::parse(
        serde_json::json!({
            "key": "com.example.app",
            "clientKey": client_key,
            "sharedSecret": secret,
            "baseUrl": base_url,
            "displayUrl": "https://wiki.acme.com",
            "productType": "confluence",
            "description": "Acme",
            "serverVersion": "6452",
            "pluginsVersion": "1.0.0",
            "oauthClientId": "oauth-1",
            "installationId": "ari:cloud:ecosystem::installation/1",
            "eventType": "installed",
        })
        .to_string()
        .as_bytes(),
    )
    .expect("valid install")
}

#[tokio::test]
async fn tenant_round_trip_keeps_no_plain_secret() {
    let db = TestDatabase::create().await;
    let store = TenantStore::new(db.pool.clone(), test_keyring());
    let secret = "a-very-recognisable-shared-secret-42";
    let tenant = store
        .record_install(
            &install_body("tenant-a", secret, "https://acme.atlassian.net/wiki"),
            "ev-1",
        )
        .await
        .expect("install stored");
    assert_eq!(tenant.status, TenantStatus::Installed);
    assert_eq!(tenant.oauth_client_id.as_deref(), Some("oauth-1"));

    let (read, read_secret) = store
        .get_with_secret("tenant-a")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(read.base_url, "https://acme.atlassian.net/wiki");
    assert_eq!(read_secret.expose(), secret);

    let raw: Vec<(Vec<u8>, Vec<u8>, String)> =
        sqlx::query_as("SELECT secret_ciphertext, secret_nonce, secret_key_id FROM tenants")
            .fetch_all(&db.pool)
            .await
            .expect("raw read");
    assert_eq!(raw.len(), 1);
    let (ciphertext, nonce, key_id) = &raw[0];
    assert!(
        !ciphertext
            .windows(secret.len())
            .any(|w| w == secret.as_bytes())
    );
    assert_eq!(nonce.len(), 12);
    assert_eq!(key_id, test_keyring().current_key_id());
    let whole_row: String = sqlx::query_scalar("SELECT row_to_json(t)::text FROM tenants t")
        .fetch_one(&db.pool)
        .await
        .expect("row as text");
    assert!(!whole_row.contains(secret));
}

#[tokio::test]
async fn reinstall_rotates_the_secret_and_is_idempotent() {
    let db = TestDatabase::create().await;
    let store = TenantStore::new(db.pool.clone(), test_keyring());
    let body = install_body(
        "tenant-a",
        "first-secret",
        "https://acme.atlassian.net/wiki",
    );
    store.record_install(&body, "ev-1").await.expect("install");
    store
        .record_install(&body, "ev-1")
        .await
        .expect("redelivered install");
    store
        .apply_lifecycle("tenant-a", LifecycleEventType::Enabled, "ev-2")
        .await
        .expect("enable");
    let rotated = install_body(
        "tenant-a",
        "second-secret",
        "https://renamed.atlassian.net/wiki",
    );
    let tenant = store
        .record_install(&rotated, "ev-3")
        .await
        .expect("rotation");
    assert_eq!(
        tenant.status,
        TenantStatus::Enabled,
        "an upgrade keeps the tenant enabled"
    );
    assert_eq!(tenant.base_url, "https://renamed.atlassian.net/wiki");
    let (_, secret) = store
        .get_with_secret("tenant-a")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(secret.expose(), "second-secret");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(count, 1);
    assert_eq!(
        store
            .lifecycle_history("tenant-a")
            .await
            .expect("history")
            .len(),
        4
    );
}

#[tokio::test]
async fn disabled_and_uninstalled_in_either_order() {
    let db = TestDatabase::create().await;
    let store = TenantStore::new(db.pool.clone(), test_keyring());
    for (client, order) in [
        (
            "tenant-a",
            [
                LifecycleEventType::Disabled,
                LifecycleEventType::Uninstalled,
            ],
        ),
        (
            "tenant-b",
            [
                LifecycleEventType::Uninstalled,
                LifecycleEventType::Disabled,
            ],
        ),
    ] {
        store
            .record_install(
                &install_body(client, "s", "https://acme.atlassian.net"),
                "i",
            )
            .await
            .expect("install");
        for event in order {
            store
                .apply_lifecycle(client, event, "e")
                .await
                .expect("apply");
        }
        let tenant = store.get(client).await.expect("read").expect("exists");
        assert_eq!(tenant.status, TenantStatus::Uninstalled, "{client}");
        assert!(tenant.uninstalled_at.is_some() && tenant.disabled_at.is_some());
    }
    assert_eq!(
        store
            .apply_lifecycle("nobody", LifecycleEventType::Enabled, "e")
            .await
            .expect("apply"),
        None
    );
}

#[tokio::test]
async fn a_site_import_is_a_new_tenant_and_the_old_one_stays() {
    let db = TestDatabase::create().await;
    let store = TenantStore::new(db.pool.clone(), test_keyring());
    store
        .record_install(
            &install_body("old-key", "s1", "https://acme.atlassian.net/wiki"),
            "a",
        )
        .await
        .expect("old");
    store
        .record_install(
            &install_body("new-key", "s2", "https://acme.atlassian.net/wiki"),
            "b",
        )
        .await
        .expect("new");
    let tenants = store.list().await.expect("list");
    assert_eq!(tenants.len(), 2);
    assert_eq!(
        store
            .get_with_secret("old-key")
            .await
            .expect("read")
            .expect("kept")
            .1
            .expose(),
        "s1"
    );
}

#[tokio::test]
async fn key_rotation_reencrypts_under_the_new_key() {
    let db = TestDatabase::create().await;
    let old = TenantStore::new(
        db.pool.clone(),
        crate::crypto::SecretKeyring::new([1; 32], &[]),
    );
    old.record_install(
        &install_body("tenant-a", "s1", "https://acme.atlassian.net"),
        "a",
    )
    .await
    .expect("install");
    let rotated_ring = crate::crypto::SecretKeyring::new([2; 32], &[[1; 32]]);
    let rotated = TenantStore::new(db.pool.clone(), rotated_ring.clone());
    assert_eq!(rotated.reencrypt_secrets().await.expect("reencrypt"), 1);
    assert_eq!(rotated.reencrypt_secrets().await.expect("again"), 0);
    let only_new = TenantStore::new(
        db.pool.clone(),
        crate::crypto::SecretKeyring::new([2; 32], &[]),
    );
    assert_eq!(
        only_new
            .get_with_secret("tenant-a")
            .await
            .expect("read")
            .expect("exists")
            .1
            .expose(),
        "s1"
    );
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let db = TestDatabase::create().await;
    migrate(&db.pool).await.expect("second run is a no-op");
}
