//! Handled-event records and tenant state.

use serde_json::{Value, json};

use crate::store::*;

on_both_backends!(
    an_event_commits_its_state_once,
    state_round_trips_json_values_and_deletions,
    a_batch_commits_in_one_transaction_and_drops_what_was_handled_before,
    one_query_answers_for_every_handler_and_event_of_a_batch,
);

/// The record of `handler` handling the page event at `offset` (its id names the offset).
fn page_event<'a>(handler: &'a str, event_id: &'a str, offset: i64) -> HandledEvent<'a> {
    HandledEvent {
        handler,
        event_id,
        client_key: "tenant-a",
        event_type: "page_created",
        topic: "t",
        partition: 0,
        offset,
    }
}

async fn commit_one(store: &HandlerStore, event: HandledEvent<'_>, writes: &StateWrites) -> bool {
    let recorded = store
        .commit(&[HandlerRun { event, writes }])
        .await
        .expect("commit");
    assert_eq!(recorded.len(), 1);
    recorded[0]
}

fn writes(changes: &[(&str, Option<Value>)]) -> StateWrites {
    let mut writes = StateWrites::default();
    for (key, change) in changes {
        match change {
            Some(value) => writes.set(key, value.clone()),
            None => writes.delete(key),
        }
    }
    writes
}

async fn an_event_commits_its_state_once(db: &Database) {
    let store = HandlerStore::new(db.clone());
    let event = page_event("h", "event-7", 7);
    assert!(!store.is_handled("h", event.event_id).await.expect("read"));

    let first = writes(&[("count", Some(json!(1)))]);
    assert!(commit_one(&store, event, &first).await);
    assert!(store.is_handled("h", event.event_id).await.expect("read"));
    assert!(
        !store
            .is_handled("other", event.event_id)
            .await
            .expect("read")
    );

    // A redelivery racing past the check: its writes are dropped with the duplicate record.
    let again = writes(&[("count", Some(json!(2)))]);
    assert!(!commit_one(&store, event, &again).await);
    assert_eq!(
        store.state("tenant-a", "count").await.expect("read"),
        Some(json!(1))
    );
}

async fn state_round_trips_json_values_and_deletions(db: &Database) {
    let value = json!({"title": "Ünïcode ✓", "ratio": 1.5, "tags": ["a", "b"], "n": null});
    let store = HandlerStore::new(db.clone());
    let staged = writes(&[
        ("doc", Some(value.clone())),
        ("text", Some(json!("42"))),
        ("gone", Some(json!(true))),
    ]);
    assert_eq!(staged.get("doc"), Some(Some(&value)));
    assert!(commit_one(&store, page_event("h", "event-1", 1), &staged).await);

    assert_eq!(
        store.state("tenant-a", "doc").await.expect("read"),
        Some(value)
    );
    assert_eq!(
        store.state("tenant-a", "text").await.expect("read"),
        Some(json!("42"))
    );
    let next = writes(&[("gone", None), ("text", Some(json!("43")))]);
    assert!(commit_one(&store, page_event("h", "event-2", 2), &next).await);
    assert_eq!(store.state("tenant-a", "gone").await.expect("read"), None);
    assert_eq!(
        store.state("tenant-a", "text").await.expect("read"),
        Some(json!("43"))
    );
    assert_eq!(store.state("tenant-b", "text").await.expect("read"), None);
}

/// Several runs in one transaction: each applies its writes in order, and a run recorded
/// before (even earlier in the same batch) applies nothing.
async fn a_batch_commits_in_one_transaction_and_drops_what_was_handled_before(db: &Database) {
    let store = HandlerStore::new(db.clone());
    let earlier = writes(&[("count", Some(json!(1)))]);
    assert!(commit_one(&store, page_event("h", "event-1", 1), &earlier).await);

    let handled_before = writes(&[("count", Some(json!(100)))]);
    let second = writes(&[("count", Some(json!(2))), ("seen", Some(json!(["2"])))]);
    let third = writes(&[("count", Some(json!(3))), ("seen", None)]);
    let other_handler = writes(&[("other", Some(json!("x")))]);
    let recorded = store
        .commit(&[
            HandlerRun {
                event: page_event("h", "event-1", 1),
                writes: &handled_before,
            },
            HandlerRun {
                event: page_event("h", "event-2", 2),
                writes: &second,
            },
            HandlerRun {
                event: page_event("h", "event-3", 3),
                writes: &third,
            },
            HandlerRun {
                event: page_event("h", "event-3", 3),
                writes: &handled_before,
            },
            HandlerRun {
                event: page_event("g", "event-3", 3),
                writes: &other_handler,
            },
        ])
        .await
        .expect("commit");
    assert_eq!(recorded, [false, true, true, false, true]);
    assert_eq!(
        store.state("tenant-a", "count").await.expect("read"),
        Some(json!(3))
    );
    assert_eq!(store.state("tenant-a", "seen").await.expect("read"), None);
    assert_eq!(
        store.state("tenant-a", "other").await.expect("read"),
        Some(json!("x"))
    );
    assert!(store.commit(&[]).await.expect("nothing").is_empty());
}

async fn one_query_answers_for_every_handler_and_event_of_a_batch(db: &Database) {
    let store = HandlerStore::new(db.clone());
    let nothing = StateWrites::default();
    for (handler, event_id) in [("h", "event-1"), ("h", "event-2"), ("g", "event-2")] {
        assert!(commit_one(&store, page_event(handler, event_id, 0), &nothing).await);
    }
    let handled = store
        .handled(&["h", "g"], &["event-1", "event-2", "event-3"])
        .await
        .expect("read");
    assert!(handled.contains("h", "event-1"));
    assert!(!handled.contains("g", "event-1"));
    assert!(handled.contains("h", "event-2"));
    assert!(handled.contains("g", "event-2"));
    assert!(!handled.contains("h", "event-3"));
    // Only the handlers and events asked about.
    let only_g = store
        .handled(&["g"], &["event-1", "event-2"])
        .await
        .expect("read");
    assert!(!only_g.contains("h", "event-2"));
    assert!(only_g.contains("g", "event-2"));
    assert!(
        store
            .handled(&[], &["event-1"])
            .await
            .expect("read")
            .is_empty()
    );
    assert!(store.handled(&["h"], &[]).await.expect("read").is_empty());
}
