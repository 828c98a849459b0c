//! Quota pauses and parked events.

use crate::store::*;

on_both_backends!(
    a_pause_is_shared_and_never_shortened,
    parked_events_keep_their_record_and_run_in_offset_order,
);

async fn a_pause_is_shared_and_never_shortened(db: &Database) {
    let store = PauseStore::new(db.clone());
    let now = 1_800_000_000_000;
    let tenant = |until_ms, reason: &str| Pause {
        scope: PauseScope::Tenant,
        client_key: "tenant-a".into(),
        until_ms,
        reason: reason.into(),
    };
    store
        .pause(&tenant(now + 300_000, "confluence-quota-tenant-based"))
        .await
        .expect("pause");
    // A shorter answer later keeps the longer wait and its reason.
    store
        .pause(&tenant(now + 1_000, "burst"))
        .await
        .expect("pause");
    store
        .pause(&Pause {
            scope: PauseScope::App,
            client_key: "ignored for the app".into(),
            until_ms: now + 60_000,
            reason: "confluence-quota-global-based".into(),
        })
        .await
        .expect("pause");
    let pauses = store.in_force(now).await.expect("pauses");
    assert_eq!(
        pauses,
        vec![
            Pause {
                scope: PauseScope::App,
                client_key: String::new(),
                until_ms: now + 60_000,
                reason: "confluence-quota-global-based".into(),
            },
            tenant(now + 300_000, "confluence-quota-tenant-based"),
        ]
    );
    // Once over, a pause is gone.
    let later = store.in_force(now + 120_000).await.expect("pauses");
    assert_eq!(
        later,
        vec![tenant(now + 300_000, "confluence-quota-tenant-based")]
    );
}

fn parked(offset: i64, key: &str, due_at_ms: i64) -> ParkedEvent {
    ParkedEvent {
        topic: "events".into(),
        partition: 2,
        offset,
        key: key.as_bytes().to_vec(),
        payload: Some(format!("{{\"n\":{offset}}}").into_bytes()),
        headers: vec![
            ("ce_id".into(), format!("e-{offset}").into_bytes()),
            ("empty".into(), Vec::new()),
            ("binary".into(), vec![0, 159, 255]),
        ],
        timestamp_ms: Some(1_700_000_000_000 + offset),
        client_key: key.into(),
        resume_handler: (offset == 10).then(|| "pages".to_string()),
        retries_used: 2,
        due_at_ms,
        last_error: "429".into(),
        parked_at_ms: 1_700_000_000_000,
    }
}

async fn parked_events_keep_their_record_and_run_in_offset_order(db: &Database) {
    let store = ParkedStore::new(db.clone());
    store
        .park(&[parked(10, "tenant-a", 5_000)])
        .await
        .expect("park");
    store
        .park(&[parked(12, "tenant-a", 0), parked(11, "tenant-b", 7_000)])
        .await
        .expect("park behind");
    let mut keys = store.keys("events", 2).await.expect("keys");
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(
        keys,
        vec![
            ParkedKey {
                key: b"tenant-a".to_vec(),
                events: 2,
                head_due_at_ms: 5_000,
            },
            ParkedKey {
                key: b"tenant-b".to_vec(),
                events: 1,
                head_due_at_ms: 7_000,
            },
        ]
    );
    assert!(store.keys("events", 3).await.expect("keys").is_empty());

    let head = store
        .head("events", 2, b"tenant-a")
        .await
        .expect("head")
        .expect("tenant-a has one");
    assert_eq!(
        head,
        parked(10, "tenant-a", 5_000),
        "the whole record comes back"
    );

    // Parked again: new due time and retries, same place in line.
    let mut again = parked(10, "tenant-a", 9_000);
    again.retries_used = 3;
    store
        .park(std::slice::from_ref(&again))
        .await
        .expect("repark");
    let head = store.head("events", 2, b"tenant-a").await.expect("head");
    assert_eq!(head, Some(again));

    store.remove("events", 2, 10).await.expect("remove");
    let next = store
        .head("events", 2, b"tenant-a")
        .await
        .expect("head")
        .expect("the one behind");
    assert_eq!(next.offset, 12);
    assert_eq!(
        store.by_tenant().await.expect("by tenant"),
        vec![
            ("tenant-a".to_string(), 1, 0),
            ("tenant-b".to_string(), 1, 7_000)
        ]
    );
}
