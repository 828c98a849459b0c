//! The ingest tests' world: the devkit's end-to-end harness with the ingest in this
//! process, and lifecycle callbacks and views routed to topics of their own.

pub use tributary_devkit::harness::*;
pub use tributary_devkit::kafka::{header_text as header, payload_text};

pub const EVENTS_TOPIC: &str = "tributary.events";
pub const LIFECYCLE_TOPIC: &str = "tributary.lifecycle";
pub const VIEWS_TOPIC: &str = "tributary.views";
pub const PUBLISH_TIMEOUT_MS: u64 = 1500;
pub const RETRY_AFTER_SECONDS: &str = "7";

pub async fn world() -> World {
    World::builder()
        .topic(EVENTS_TOPIC, 3)
        .topic(LIFECYCLE_TOPIC, 1)
        .topic(VIEWS_TOPIC, 1)
        .setting(
            "TRIBUTARY_INGEST_PUBLISH_TIMEOUT_MS",
            &PUBLISH_TIMEOUT_MS.to_string(),
        )
        .setting("TRIBUTARY_INGEST_RETRY_AFTER_SECONDS", RETRY_AFTER_SECONDS)
        .setting(
            "TRIBUTARY_TOPIC_ROUTES",
            &format!(
                "installed={LIFECYCLE_TOPIC},uninstalled={LIFECYCLE_TOPIC},\
                 enabled={LIFECYCLE_TOPIC},disabled={LIFECYCLE_TOPIC},*_viewed={VIEWS_TOPIC}"
            ),
        )
        .ingest_in_process(tributary_ingest::run)
        .start()
        .await
}
