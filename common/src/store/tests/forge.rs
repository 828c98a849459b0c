use super::test_keyring;
use crate::forge::SystemToken;
use crate::store::{Database, ForgeStatus, ForgeStore, InvocationRecord, site_tenant_key};

const INSTALLATION: &str = "ari:cloud:ecosystem::installation/1b7c0f52-0000-4000-8000-000000000001";
const REINSTALLED: &str = "ari:cloud:ecosystem::installation/1b7c0f52-0000-4000-8000-000000000002";
const CLOUD: &str = "6f1e3c2a-0000-4000-8000-00000000c10d";
const API: &str = "https://api.atlassian.com/ex/confluence/6f1e3c2a-0000-4000-8000-00000000c10d";
const APP: &str = "ari:cloud:ecosystem::app/6a1b8ac2-4f5e-4a2b-9c47-2f9f8e7d6c5b";

fn invocation(installation_id: &str) -> InvocationRecord<'_> {
    InvocationRecord {
        installation_id,
        cloud_id: Some(CLOUD),
        api_base_url: API,
        app_id: APP,
        environment_type: Some("PRODUCTION"),
    }
}

async fn a_new_site_is_keyed_by_its_site_ari_and_keeps_it_across_reinstalls(db: &Database) {
    let store = ForgeStore::new(db.clone(), test_keyring());
    let first = store
        .record_invocation(&invocation(INSTALLATION), None)
        .await
        .expect("record");
    assert_eq!(first.tenant_key, site_tenant_key(CLOUD));
    assert_eq!(first.status, ForgeStatus::Installed);
    assert_eq!(first.token_expires_at, None);
    let again = store
        .record_invocation(&invocation(REINSTALLED), None)
        .await
        .expect("record");
    assert_eq!(again.installation_id, REINSTALLED);
    assert_eq!(again.tenant_key, first.tenant_key);
    assert!(
        store
            .by_installation(INSTALLATION)
            .await
            .expect("read")
            .is_none()
    );
}

async fn the_system_token_is_stored_encrypted(db: &Database) {
    let store = ForgeStore::new(db.clone(), test_keyring());
    let token = SystemToken::new("system-token-value-1");
    store
        .record_invocation(&invocation(INSTALLATION), Some((&token, 4_000_000_000)))
        .await
        .expect("record");
    let (installation, stored) = store
        .for_tenant(&site_tenant_key(CLOUD))
        .await
        .expect("read")
        .expect("known");
    assert_eq!(stored, Some(token));
    assert_eq!(installation.token_expires_at, Some(4_000_000_000));
    let raw: Vec<u8> = crate::with_database!(db, |pool, _sql| {
        sqlx::query_scalar("SELECT token_ciphertext FROM forge_installations")
            .fetch_one(pool)
            .await
            .expect("row")
    });
    assert!(!raw.windows(12).any(|w| w == b"system-token"));
    // A delivery for the same installation without a token keeps it; a reinstall (a new
    // installation id) retires it, since it was the old installation's.
    store
        .record_invocation(&invocation(INSTALLATION), None)
        .await
        .expect("record");
    let (_, kept) = store
        .for_tenant(&site_tenant_key(CLOUD))
        .await
        .expect("read")
        .expect("known");
    assert_eq!(kept, Some(SystemToken::new("system-token-value-1")));
    store
        .record_invocation(&invocation(REINSTALLED), None)
        .await
        .expect("record");
    let (reinstalled, retired) = store
        .for_tenant(&site_tenant_key(CLOUD))
        .await
        .expect("read")
        .expect("known");
    assert_eq!((retired, reinstalled.token_expires_at), (None, None));
}

async fn a_connect_install_links_before_or_after_forge_delivers(db: &Database) {
    let store = ForgeStore::new(db.clone(), test_keyring());
    // Connect first: the installation row is made with the clientKey, and Forge's first
    // delivery fills in the site.
    let linked = store
        .link_connect(INSTALLATION, "connect-client-1")
        .await
        .expect("link");
    assert_eq!(linked.tenant_key, "connect-client-1");
    let delivered = store
        .record_invocation(&invocation(INSTALLATION), None)
        .await
        .expect("record");
    assert_eq!(delivered.tenant_key, "connect-client-1");
    assert_eq!(delivered.cloud_id.as_deref(), Some(CLOUD));

    // Forge first on another site: keyed by the site until Connect names the installation.
    let other = InvocationRecord {
        cloud_id: Some("other-cloud"),
        ..invocation(REINSTALLED)
    };
    let forge_only = store.record_invocation(&other, None).await.expect("record");
    assert_eq!(forge_only.tenant_key, site_tenant_key("other-cloud"));
    let linked = store
        .link_connect(REINSTALLED, "connect-client-2")
        .await
        .expect("link");
    assert_eq!(linked.tenant_key, "connect-client-2");
    assert_eq!(linked.cloud_id.as_deref(), Some("other-cloud"));
}

async fn lifecycle_sets_the_status(db: &Database) {
    let store = ForgeStore::new(db.clone(), test_keyring());
    store
        .record_invocation(&invocation(INSTALLATION), None)
        .await
        .expect("record");
    let after = store
        .set_status(INSTALLATION, ForgeStatus::Uninstalled)
        .await
        .expect("status")
        .expect("known");
    assert_eq!(after.status, ForgeStatus::Uninstalled);
    assert!(
        store
            .set_status(REINSTALLED, ForgeStatus::Uninstalled)
            .await
            .expect("status")
            .is_none()
    );
}

async fn retried_deliveries_keep_their_id_and_first_ones_never_do(db: &Database) {
    let store = ForgeStore::new(db.clone(), test_keyring());
    let now = 1_800_000_000_000;
    let window = 600_000;
    let first = store
        .delivery_id(INSTALLATION, "h1", false, "id-1", now, window)
        .await
        .expect("id");
    assert_eq!(first, "id-1");
    // The same content delivered fresh again is another event.
    let twin = store
        .delivery_id(INSTALLATION, "h1", false, "id-2", now + 10, window)
        .await
        .expect("id");
    assert_eq!(twin, "id-2");
    // A retry repeats the latest delivery of that content.
    let retry = store
        .delivery_id(INSTALLATION, "h1", true, "id-3", now + 60_000, window)
        .await
        .expect("id");
    assert_eq!(retry, "id-2");
    // Other content, another installation, or past the window: a fresh id.
    let other = store
        .delivery_id(INSTALLATION, "h2", true, "id-4", now + 60_000, window)
        .await
        .expect("id");
    assert_eq!(other, "id-4");
    let elsewhere = store
        .delivery_id(REINSTALLED, "h1", true, "id-5", now + 60_000, window)
        .await
        .expect("id");
    assert_eq!(elsewhere, "id-5");
    let late = store
        .delivery_id(
            INSTALLATION,
            "h1",
            true,
            "id-6",
            now + window + 1_000,
            window,
        )
        .await
        .expect("id");
    assert_eq!(late, "id-6");
}

on_both_backends!(
    a_new_site_is_keyed_by_its_site_ari_and_keeps_it_across_reinstalls,
    the_system_token_is_stored_encrypted,
    a_connect_install_links_before_or_after_forge_delivers,
    lifecycle_sets_the_status,
    retried_deliveries_keep_their_id_and_first_ones_never_do,
);
