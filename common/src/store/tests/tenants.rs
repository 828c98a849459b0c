//! The tenant store.

use sqlx::Row;

use crate::connect::{LifecycleEventType, LifecyclePayload};
use crate::store::*;
use crate::with_database;

use super::test_keyring;

on_both_backends!(
    tenant_round_trip_keeps_no_plain_secret,
    reinstall_rotates_the_secret_and_is_idempotent,
    disabled_and_uninstalled_in_either_order,
    a_site_import_is_a_new_tenant_and_the_old_one_stays,
    key_rotation_reencrypts_under_the_new_key,
    migrations_are_idempotent,
    concurrent_installs_of_one_tenant_all_succeed,
    a_client_key_the_database_cannot_hold_is_the_callers_fault,
);

async fn tenant_count(db: &Database) -> i64 {
    with_database!(db, |pool, _sql| {
        sqlx::query_scalar("SELECT count(*) FROM tenants")
            .fetch_one(pool)
            .await
            .expect("count")
    })
}

/// Every column of every tenant row, as the bytes the database hands out (`None` for NULL).
async fn raw_tenant_columns(db: &Database) -> Vec<Option<Vec<u8>>> {
    with_database!(db, |pool, _sql| {
        let rows = sqlx::query("SELECT * FROM tenants")
            .fetch_all(pool)
            .await
            .expect("raw read");
        rows.iter()
            .flat_map(|row| {
                (0..row.len()).map(move |i| {
                    row.try_get_unchecked::<Option<Vec<u8>>, _>(i)
                        .expect("column bytes")
                })
            })
            .collect()
    })
}

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

async fn tenant_round_trip_keeps_no_plain_secret(db: &Database) {
    let store = TenantStore::new(db.clone(), test_keyring());
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

    let raw: Vec<(Vec<u8>, Vec<u8>, String)> = with_database!(db, |pool, _sql| {
        sqlx::query_as("SELECT secret_ciphertext, secret_nonce, secret_key_id FROM tenants")
            .fetch_all(pool)
            .await
            .expect("raw read")
    });
    assert_eq!(raw.len(), 1);
    let (ciphertext, nonce, key_id) = &raw[0];
    assert!(
        !ciphertext
            .windows(secret.len())
            .any(|w| w == secret.as_bytes())
    );
    assert_eq!(nonce.len(), 12);
    assert_eq!(key_id, test_keyring().current_key_id());
    let columns = raw_tenant_columns(db).await;
    assert_eq!(columns.len(), 25, "every column of the one row");
    for column in columns.into_iter().flatten() {
        assert!(!column.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }
}

async fn reinstall_rotates_the_secret_and_is_idempotent(db: &Database) {
    let store = TenantStore::new(db.clone(), test_keyring());
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
    assert_eq!(tenant_count(db).await, 1);
    assert_eq!(
        store
            .lifecycle_history("tenant-a")
            .await
            .expect("history")
            .len(),
        4
    );
}

async fn disabled_and_uninstalled_in_either_order(db: &Database) {
    let store = TenantStore::new(db.clone(), test_keyring());
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
        // Stamped after the install and one after the other: callbacks stamped in the same
        // millisecond are ordered by event id, which here would say nothing of arrival.
        let after_install = chrono::Utc::now().timestamp_millis() + 1;
        for (n, event) in order.into_iter().enumerate() {
            let stamp = LifecycleStamp {
                at_ms: after_install + n as i64,
                event_id: format!("e{n}"),
            };
            store
                .apply_lifecycle_at(client, event, &stamp)
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

async fn a_site_import_is_a_new_tenant_and_the_old_one_stays(db: &Database) {
    let store = TenantStore::new(db.clone(), test_keyring());
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

async fn key_rotation_reencrypts_under_the_new_key(db: &Database) {
    let old = TenantStore::new(db.clone(), crate::crypto::SecretKeyring::new([1; 32], &[]));
    old.record_install(
        &install_body("tenant-a", "s1", "https://acme.atlassian.net"),
        "a",
    )
    .await
    .expect("install");
    let rotated_ring = crate::crypto::SecretKeyring::new([2; 32], &[[1; 32]]);
    let rotated = TenantStore::new(db.clone(), rotated_ring.clone());
    assert_eq!(rotated.reencrypt_secrets().await.expect("reencrypt"), 1);
    assert_eq!(rotated.reencrypt_secrets().await.expect("again"), 0);
    let only_new = TenantStore::new(db.clone(), crate::crypto::SecretKeyring::new([2; 32], &[]));
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

async fn migrations_are_idempotent(db: &Database) {
    migrate(db).await.expect("second run is a no-op");
}

/// Installs racing for one tenant (Confluence retrying while the first is still in flight)
/// serialise on the row: every one succeeds and one row remains.
async fn concurrent_installs_of_one_tenant_all_succeed(db: &Database) {
    let store = TenantStore::new(db.clone(), test_keyring());
    let installs: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let body = install_body(
                    "tenant-a",
                    &format!("secret-{i}"),
                    "https://acme.atlassian.net",
                );
                store.record_install(&body, &format!("ev-{i}")).await
            })
        })
        .collect();
    for install in installs {
        install.await.expect("task").expect("install");
    }
    assert_eq!(tenant_count(db).await, 1);
    assert_eq!(
        store
            .lifecycle_history("tenant-a")
            .await
            .expect("history")
            .len(),
        8
    );
}

async fn a_client_key_the_database_cannot_hold_is_the_callers_fault(db: &Database) {
    let store = TenantStore::new(db.clone(), test_keyring());
    for client_key in ["nul\0inside", "\0"] {
        match store.get_with_secret(client_key).await {
            Ok(found) => assert!(found.is_none(), "no tenant is called {client_key:?}"),
            Err(err) => {
                assert!(err.is_caused_by_input(), "{err}");
                assert!(!err.is_transient(), "{err}");
            }
        }
    }
}
