//! The world of the end-to-end tests: the devkit's harness with a PostgreSQL cluster of
//! its own (so a test can stop it), the real ingest binary as a child process, and the test
//! processor, whose handled events and tenant state tell what happened to every event.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::{PgPool, Row};
use tributary_devkit::harness::{Service, World};

use crate::{HANDLED_KEY, HANDLER_NAME};

pub const EVENTS_TOPIC: &str = "tributary.events";
pub const DLQ_TOPIC: &str = "tributary.events.dlq";
pub const GROUP_ID: &str = "e2e-processors";
/// The Retry-After the ingest sends with its 503s.
pub const RETRY_AFTER_SECONDS: u64 = 1;
/// The test processor binary.
pub const TEST_PROCESSOR: &str = "tributary-test-processor";

/// Starts everything but the services, with the events topic in `partitions` partitions,
/// and migrates the database with `tributary migrate`.
pub async fn start(partitions: i32) -> World {
    World::builder()
        .topic(EVENTS_TOPIC, partitions)
        .topic(DLQ_TOPIC, 1)
        .own_cluster()
        .setting("TRIBUTARY_DATABASE_CONNECT_TIMEOUT_SECONDS", "2")
        .setting("TRIBUTARY_TENANT_HOST_ALLOWLIST", "127.0.0.1")
        .setting("TRIBUTARY_EVENTS_TOPIC", EVENTS_TOPIC)
        .setting("TRIBUTARY_PROCESSOR_TOPICS", EVENTS_TOPIC)
        .setting("TRIBUTARY_PROCESSOR_GROUP_ID", GROUP_ID)
        .setting("TRIBUTARY_INGEST_PUBLISH_TIMEOUT_MS", "2000")
        .setting(
            "TRIBUTARY_INGEST_RETRY_AFTER_SECONDS",
            &RETRY_AFTER_SECONDS.to_string(),
        )
        .setting("TRIBUTARY_INGEST_SECRET_CACHE_TTL_SECONDS", "600")
        .start()
        .await
}

/// Starts the test processor (one member of the group) in `world`, with `extra` settings.
pub fn start_processor(world: &World, extra: &[(&str, &str)]) -> Service {
    let mut settings = vec![
        ("TRIBUTARY_METRICS_LISTEN", "127.0.0.1:0"),
        ("TRIBUTARY_PROCESSOR_COMMIT_INTERVAL_MS", "200"),
        ("TRIBUTARY_PROCESSOR_RETRY_INITIAL_MS", "50"),
        ("TRIBUTARY_PROCESSOR_RETRY_MAX_MS", "1000"),
        // A killed member is noticed in seconds, not in the default 45.
        (
            "TRIBUTARY_KAFKA_CLIENT_PROPERTIES",
            "session.timeout.ms=6000,heartbeat.interval.ms=500",
        ),
    ];
    settings.extend_from_slice(extra);
    world.service(TEST_PROCESSOR, &settings)
}

/// Every webhook event the test handler has handled: event id -> clientKey.
pub async fn handled(pool: &PgPool) -> HashMap<String, String> {
    sqlx::query(
        "SELECT event_id, client_key FROM handled_events WHERE handler = $1 \
         AND event_type NOT IN ('installed', 'uninstalled', 'enabled', 'disabled')",
    )
    .bind(HANDLER_NAME)
    .fetch_all(pool)
    .await
    .expect("handled events")
    .into_iter()
    .map(|row| (row.get("event_id"), row.get("client_key")))
    .collect()
}

/// Each tenant's list of handled event ids, in the order the handler appended them.
pub async fn tenant_lists(pool: &PgPool) -> HashMap<String, Vec<String>> {
    sqlx::query("SELECT client_key, value::text AS ids FROM tenant_state WHERE key = $1")
        .bind(HANDLED_KEY)
        .fetch_all(pool)
        .await
        .expect("tenant state")
        .into_iter()
        .map(|row| {
            let ids: String = row.get("ids");
            (
                row.get("client_key"),
                serde_json::from_str(&ids).expect("a list of event ids"),
            )
        })
        .collect()
}

/// Waits until every id in `expected` is handled or `patience` passes; the handled
/// events then.
pub async fn wait_handled(
    pool: &PgPool,
    expected: &[String],
    patience: Duration,
) -> HashMap<String, String> {
    let until = std::time::Instant::now() + patience;
    loop {
        let handled = handled(pool).await;
        if expected.iter().all(|id| handled.contains_key(id)) || std::time::Instant::now() > until {
            return handled;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
