//! What a handler sees of its tenant's state: its own staged writes first, then what is
//! committed. (The store's own tests cover the database side on both backends.)

use serde_json::{Value, json};
use tributary_common::store::{HandledEvent, HandlerRun, HandlerStore, StateWrites};
use tributary_devkit::TestSqlite;

use super::*;

#[tokio::test]
async fn reads_see_the_handlers_own_writes_before_the_committed_state() {
    let db = TestSqlite::create().await;
    let store = HandlerStore::new(db.pool.clone());
    let mut committed = StateWrites::default();
    committed.set("count", json!(1));
    committed.set("text", json!("42"));
    let event = HandledEvent {
        handler: "h",
        event_id: "event-1",
        client_key: "tenant-a",
        event_type: "page_created",
        topic: "t",
        partition: 0,
        offset: 1,
    };
    store
        .commit(&[HandlerRun {
            event,
            writes: &committed,
        }])
        .await
        .expect("commit");

    let state = TenantState::over(store.clone(), "tenant-a", None);
    assert_eq!(state.get::<u64>("count").await.expect("read"), Some(1));
    let value = json!({"title": "Ünïcode ✓", "ratio": 1.5, "tags": ["a", "b"], "n": null});
    state.set("doc", &value).expect("stage");
    state.set("count", &2).expect("stage");
    state.delete("text");
    assert_eq!(
        state.get::<Value>("doc").await.expect("own write"),
        Some(value.clone())
    );
    assert_eq!(state.get::<u64>("count").await.expect("own write"), Some(2));
    assert_eq!(
        state.get::<String>("text").await.expect("own deletion"),
        None
    );
    assert!(matches!(
        state.get::<String>("count").await,
        Err(StateError::Json(_))
    ));
    let other_tenant = TenantState::over(store.clone(), "tenant-b", None);
    assert_eq!(other_tenant.get::<u64>("count").await.expect("read"), None);

    let taken = state.take_writes();
    assert_eq!(taken.get("doc"), Some(Some(&value)));
    assert_eq!(taken.get("text"), Some(None));
    assert!(state.take_writes().is_empty(), "taken once");
    assert_eq!(
        store.state("tenant-a", "count").await.expect("read"),
        Some(json!(1)),
        "staged writes reach the store only through the runtime's commit"
    );
}
