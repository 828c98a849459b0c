//! Handled-event records and tenant state.

use serde_json::{Value, json};

use crate::store::*;
use crate::with_database;

on_both_backends!(
    an_event_commits_its_state_once,
    state_round_trips_json_values_and_deletions,
    a_batch_commits_in_one_transaction_and_drops_what_was_handled_before,
    a_batch_without_state_writes_records_each_new_run_once,
    one_query_answers_for_every_handler_and_event_of_a_batch,
    prune_deletes_only_records_older_than_the_cutoff_one_chunk_at_a_time,
    merged_writes_let_the_later_change_win,
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

/// Records alone take the one-statement path: the same answers as the transaction's.
async fn a_batch_without_state_writes_records_each_new_run_once(db: &Database) {
    let store = HandlerStore::new(db.clone());
    let none = StateWrites::default();
    assert!(commit_one(&store, page_event("h", "event-1", 1), &none).await);
    let run = |handler, event_id, offset| HandlerRun {
        event: page_event(handler, event_id, offset),
        writes: &none,
    };
    let recorded = store
        .commit(&[
            run("h", "event-1", 1),
            run("h", "event-2", 2),
            run("g", "event-2", 2),
            run("h", "event-2", 2),
        ])
        .await
        .expect("commit");
    assert_eq!(recorded, [false, true, true, false]);
    let found = store
        .handled(&["h", "g"], &["event-1", "event-2"])
        .await
        .expect("read");
    for (handler, event_id) in [("h", "event-1"), ("h", "event-2"), ("g", "event-2")] {
        assert!(found.contains(handler, event_id), "{handler} {event_id}");
    }
    assert!(!found.contains("g", "event-1"));
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

async fn prune_deletes_only_records_older_than_the_cutoff_one_chunk_at_a_time(db: &Database) {
    let store = HandlerStore::new(db.clone());
    let none = StateWrites::default();
    let ids: Vec<String> = (0..5).map(|n| format!("event-{n}")).collect();
    for (offset, id) in ids.iter().enumerate() {
        assert!(commit_one(&store, page_event("h", id, offset as i64), &none).await);
    }
    let now = chrono::Utc::now();
    // Two records from ten days ago, one from six days ago, two from now.
    let aged = [
        ("event-0", now - chrono::Duration::days(10)),
        ("event-1", now - chrono::Duration::days(10)),
        ("event-2", now - chrono::Duration::days(6)),
    ];
    for (id, at) in aged {
        let at = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let sql = match db.backend() {
            Backend::Postgres => {
                "UPDATE handled_events SET handled_at = CAST($1 AS TIMESTAMPTZ) WHERE event_id = $2"
            }
            Backend::Sqlite => "UPDATE handled_events SET handled_at = $1 WHERE event_id = $2",
        };
        with_database!(db, |pool, _sql| {
            sqlx::query(sql)
                .bind(&at)
                .bind(id)
                .execute(pool)
                .await
                .expect("age a record");
        });
    }
    let cutoff = now - chrono::Duration::days(7);
    assert_eq!(store.prune_handled(cutoff, 1).await.expect("prune"), 1);
    assert_eq!(store.prune_handled(cutoff, 10).await.expect("prune"), 1);
    assert_eq!(store.prune_handled(cutoff, 10).await.expect("prune"), 0);
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let left = store.handled(&["h"], &id_refs).await.expect("read");
    for id in &id_refs[..2] {
        assert!(!left.contains("h", id), "{id} is past the retention");
    }
    for id in &id_refs[2..] {
        assert!(left.contains("h", id), "{id} is within the retention");
    }
}

async fn merged_writes_let_the_later_change_win(_db: &Database) {
    let mut earlier = writes(&[("a", Some(json!(1))), ("b", Some(json!(2)))]);
    let later = writes(&[("a", None), ("c", Some(json!(3)))]);
    earlier.merge(&later);
    assert_eq!(earlier.get("a"), Some(None));
    assert_eq!(earlier.get("b"), Some(Some(&json!(2))));
    assert_eq!(earlier.get("c"), Some(Some(&json!(3))));
}

/// Whatever the table's statistics say (here: none, as with autovacuum off or behind), the
/// handled-before query looks each (handler, event) pair up in the primary key; a plain join
/// was planned, for a batch of a hundred events or more, as a scan of every record of each
/// handler.
#[tokio::test]
async fn the_handled_before_query_looks_each_pair_up_whatever_the_statistics() {
    let db = tributary_devkit::TestDatabase::create().await;
    sqlx::query(
        "INSERT INTO handled_events \
         (handler, event_id, client_key, event_type, topic, kafka_partition, kafka_offset) \
         SELECT h, 'event-' || g, 'tenant-a', 'page_created', 't', 0, g \
         FROM generate_series(1, 20000) AS g, (VALUES ('log'), ('state')) AS v(h)",
    )
    .execute(&db.pool)
    .await
    .expect("fill the table");
    let handlers = vec!["log", "state"];
    for batch in [1usize, 50, 500] {
        let ids: Vec<String> = (0..batch).map(|i| format!("event-{}", i * 97)).collect();
        let plan: Vec<String> = sqlx::query_scalar(&format!(
            "EXPLAIN {}",
            crate::store::handled::HANDLED_BEFORE_PG
        ))
        .bind(&handlers)
        .bind(&ids)
        .fetch_all(&db.pool)
        .await
        .expect("explain");
        let plan = plan.join("\n");
        assert!(
            plan.contains("handled_events_pkey")
                && !plan.contains("Hash")
                && !plan.contains("Merge")
                && !plan.contains("Seq Scan on handled_events"),
            "a batch of {batch} events is looked up pair by pair:\n{plan}"
        );
    }
    let database: Database = db.pool.clone().into();
    let store = HandlerStore::new(database);
    let found = store
        .handled(&handlers, &["event-97", "event-missing"])
        .await
        .expect("read");
    assert!(found.contains("log", "event-97") && found.contains("state", "event-97"));
    assert!(!found.contains("log", "event-missing"));
}
