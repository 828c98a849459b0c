//! Handled-event records and tenant state, on PostgreSQL and on SQLite.

use bytes::Bytes;
use tributary_common::envelope::{Envelope, EventKind};
use tributary_common::store::Database;

use super::*;
use crate::event::Origin;

/// A `#[tokio::test]` per backend for each named `async fn(Database)`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = tributary_devkit::TestDatabase::create().await;
                    super::$name(db.pool.clone().into()).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = tributary_devkit::TestSqlite::create().await;
                    super::$name(db.pool.clone().into()).await;
                }
            )*
        }
    };
}

on_both_backends!(
    an_event_commits_its_state_once,
    state_round_trips_json_values_and_deletions,
);

fn page_event(offset: i64) -> Event {
    let envelope = Envelope::new(
        EventKind::Webhook("page_created".into()),
        "tenant-a",
        "https://acme.atlassian.net/wiki",
        Bytes::from_static(b"{\"page\":{\"id\":1}}"),
    );
    Event::new(
        envelope,
        Origin {
            topic: "t".into(),
            partition: 0,
            offset,
        },
    )
    .expect("JSON body")
}

async fn an_event_commits_its_state_once(db: Database) {
    let event = page_event(7);
    assert!(!is_handled(&db, "h", event.id()).await.expect("read"));

    let first = TenantState::new(db.clone(), "tenant-a");
    first.set("count", &1).expect("stage");
    assert!(
        commit_handled(&db, "h", &event, &first)
            .await
            .expect("commit")
    );
    assert!(is_handled(&db, "h", event.id()).await.expect("read"));
    assert!(!is_handled(&db, "other", event.id()).await.expect("read"));

    // A redelivery racing past the check: its writes are dropped with the duplicate record.
    let again = TenantState::new(db.clone(), "tenant-a");
    again.set("count", &2).expect("stage");
    assert!(
        !commit_handled(&db, "h", &event, &again)
            .await
            .expect("commit")
    );
    let reader = TenantState::new(db.clone(), "tenant-a");
    assert_eq!(reader.get::<u64>("count").await.expect("read"), Some(1));
}

async fn state_round_trips_json_values_and_deletions(db: Database) {
    let value =
        serde_json::json!({"title": "Ünïcode ✓", "ratio": 1.5, "tags": ["a", "b"], "n": null});
    let state = TenantState::new(db.clone(), "tenant-a");
    state.set("doc", &value).expect("stage");
    state.set("text", &"42").expect("stage");
    state.set("gone", &true).expect("stage");
    assert_eq!(
        state
            .get::<serde_json::Value>("doc")
            .await
            .expect("own write"),
        Some(value.clone())
    );
    assert!(
        commit_handled(&db, "h", &page_event(1), &state)
            .await
            .expect("commit")
    );

    let next = TenantState::new(db.clone(), "tenant-a");
    assert_eq!(
        next.get::<serde_json::Value>("doc").await.expect("read"),
        Some(value)
    );
    assert_eq!(
        next.get::<String>("text").await.expect("read"),
        Some("42".to_string())
    );
    next.delete("gone");
    next.set("text", &"43").expect("stage");
    assert!(
        commit_handled(&db, "h", &page_event(2), &next)
            .await
            .expect("commit")
    );
    let last = TenantState::new(db, "tenant-a");
    assert_eq!(last.get::<bool>("gone").await.expect("read"), None);
    assert_eq!(
        last.get::<String>("text").await.expect("read"),
        Some("43".to_string())
    );
    let other_tenant = TenantState::new(last.db.clone(), "tenant-b");
    assert_eq!(
        other_tenant.get::<String>("text").await.expect("read"),
        None
    );
}
