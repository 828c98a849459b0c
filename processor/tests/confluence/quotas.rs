//! Atlassian's quotas: a tenant-quota answer pauses that tenant's calls and a global-quota
//! answer every call, in each replica that shares the database; a spent quota waits for
//! its reset in either format Atlassian sends; long waits come back to the caller at once.

use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tributary_common::connect::SharedSecret;
use tributary_common::shutdown::Shutdown;
use tributary_common::store::{Database, PauseStore};
use tributary_devkit::TestDatabase;
use tributary_devkit::confluence::{Answers, Scripted, Simulator};
use tributary_processor::confluence::{ConfluenceClient, ConfluenceClients, ConfluenceError};

use crate::{SECRET, config, simulator, tenant};

const OTHER_TENANT: &str = "client-key-globex";

/// Two processor replicas' clients for two tenants of one simulated Confluence, sharing
/// pauses through one database.
struct Replicas {
    confluence: Simulator,
    /// Replica one, for `CLIENT_KEY`.
    first: ConfluenceClient,
    /// Replica two, for `CLIENT_KEY` and for `OTHER_TENANT`.
    second: ConfluenceClient,
    second_other: ConfluenceClient,
    _db: TestDatabase,
    stop: Shutdown,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn replicas() -> Replicas {
    let stop = Shutdown::new();
    let confluence = simulator(Answers::Echo, &stop).await;
    confluence.register(OTHER_TENANT, SECRET);
    let db = TestDatabase::create().await;
    let settings = config(&confluence.authorization_server().url(), &[]);
    let replica = || {
        let clients = ConfluenceClients::from_config(&settings).expect("clients");
        clients.share_pauses_through(PauseStore::new(Database::Postgres(db.pool.clone())));
        clients
    };
    let (one, two) = (replica(), replica());
    let acme = tenant(&confluence.base_url());
    let mut globex = acme.clone();
    globex.client_key = OTHER_TENANT.into();
    let client = |clients: &ConfluenceClients, t| {
        clients
            .for_tenant(t, SharedSecret::new(SECRET))
            .expect("loopback tenant is allowed")
    };
    Replicas {
        first: client(&one, &acme),
        second: client(&two, &acme),
        second_other: client(&two, &globex),
        confluence,
        _db: db,
        stop,
    }
}

async fn get(client: &ConfluenceClient) -> Result<Value, ConfluenceError> {
    client.get_json("/api/v2/pages/1", &[]).await
}

fn throttled_scope(result: Result<Value, ConfluenceError>) -> &'static str {
    match result {
        Err(ConfluenceError::Throttled { scope, wait, .. }) => {
            assert!(
                wait > Duration::from_secs(200),
                "waits out the quota: {wait:?}"
            );
            scope
        }
        other => panic!("expected a throttled call, got {other:?}"),
    }
}

#[tokio::test]
async fn a_tenant_quota_answer_pauses_that_tenant_in_every_replica_and_no_one_else() {
    let replicas = replicas().await;
    replicas.confluence.enqueue(
        Scripted::status(429)
            .header("Retry-After", "300")
            .header("RateLimit-Reason", "confluence-quota-tenant-based"),
    );
    let error = get(&replicas.first).await.expect_err("rate limited");
    assert_eq!(error.status(), Some(429));
    assert_eq!(
        replicas.confluence.hits(),
        1,
        "a 300 s wait is not slept through"
    );

    // The other replica does not spend the tenant's spent quota: nothing is sent.
    assert_eq!(throttled_scope(get(&replicas.second).await), "tenant");
    assert_eq!(throttled_scope(get(&replicas.first).await), "tenant");
    assert_eq!(replicas.confluence.hits(), 1);
    // Another tenant's calls go out as usual.
    get(&replicas.second_other)
        .await
        .expect("another tenant is not paused");
    assert_eq!(replicas.confluence.hits(), 2);
}

#[tokio::test]
async fn a_global_quota_answer_pauses_every_call_of_the_app_in_every_replica() {
    let replicas = replicas().await;
    replicas.confluence.enqueue(
        Scripted::status(429)
            .header("Retry-After", "600")
            .header("RateLimit-Reason", "confluence-quota-global-based"),
    );
    get(&replicas.first).await.expect_err("rate limited");
    assert_eq!(throttled_scope(get(&replicas.second).await), "app");
    assert_eq!(throttled_scope(get(&replicas.second_other).await), "app");
    assert_eq!(replicas.confluence.hits(), 1, "nothing else was sent");
}

#[tokio::test]
async fn a_spent_quota_waits_for_its_reset_in_either_format() {
    for reset in [
        // Atlassian's yyyy-MM-ddTHH:mmZ, no seconds: at least four minutes ahead.
        (Utc::now() + chrono::Duration::minutes(5))
            .format("%Y-%m-%dT%H:%MZ")
            .to_string(),
        // ISO 8601 with seconds.
        (Utc::now() + chrono::Duration::seconds(400)).to_rfc3339(),
    ] {
        let replicas = replicas().await;
        replicas.confluence.enqueue(
            Scripted::status(429)
                .header("X-RateLimit-Remaining", "0")
                .header("X-RateLimit-Reset", &reset),
        );
        get(&replicas.first).await.expect_err("rate limited");
        assert_eq!(
            throttled_scope(get(&replicas.second).await),
            "tenant",
            "reset {reset} is honoured"
        );
        assert_eq!(replicas.confluence.hits(), 1);
    }
}

#[tokio::test]
async fn a_short_retry_after_is_waited_out_in_place() {
    let replicas = replicas().await;
    replicas.confluence.enqueue(
        Scripted::status(429)
            .header("Retry-After", "1")
            .header("RateLimit-Reason", "confluence-quota-tenant-based"),
    );
    let began = std::time::Instant::now();
    get(&replicas.first)
        .await
        .expect("a one-second wait is slept through");
    assert!(began.elapsed() >= Duration::from_secs(1));
    assert_eq!(replicas.confluence.hits(), 2);
}
