//! The tenant-change feed.

use std::time::Duration;

use super::test_keyring;
use crate::store::*;

on_both_backends!(
    announced_changes_reach_the_feed_after_a_resync,
    a_lost_connection_is_followed_by_a_resync,
);

/// Far beyond what a notification on loopback takes; only a broken feed waits this long.
const PATIENCE: Duration = Duration::from_secs(30);

async fn next(feed: &mut TenantChangeFeed) -> Option<TenantChange> {
    tokio::time::timeout(PATIENCE, feed.next())
        .await
        .expect("the feed answers")
}

async fn announced_changes_reach_the_feed_after_a_resync(db: &Database) {
    let store = TenantStore::new(db.clone(), test_keyring());
    let mut feed = store.change_feed();
    if db.backend() == Backend::Sqlite {
        // One process: nobody to tell, nothing to hear.
        store.announce_change("tenant-a").await.expect("announce");
        assert_eq!(next(&mut feed).await, None);
        return;
    }
    assert_eq!(next(&mut feed).await, Some(TenantChange::Resync));
    let other_process = TenantStore::new(db.clone(), test_keyring());
    other_process
        .announce_change("tenant-a")
        .await
        .expect("announce");
    store.announce_change("tenant-b").await.expect("announce");
    assert_eq!(
        next(&mut feed).await,
        Some(TenantChange::Changed("tenant-a".into()))
    );
    assert_eq!(
        next(&mut feed).await,
        Some(TenantChange::Changed("tenant-b".into()))
    );
    db.close().await;
    assert_eq!(next(&mut feed).await, None, "a closed pool ends the feed");
}

async fn a_lost_connection_is_followed_by_a_resync(db: &Database) {
    let store = TenantStore::new(db.clone(), test_keyring());
    let mut feed = store.change_feed();
    let Some(pool) = db.as_postgres() else {
        assert_eq!(next(&mut feed).await, None);
        return;
    };
    assert_eq!(next(&mut feed).await, Some(TenantChange::Resync));
    // Cut every other connection to this test's database, the listener's among them.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(pool)
    .await
    .expect("terminate");
    assert_eq!(
        next(&mut feed).await,
        Some(TenantChange::Resync),
        "announcements may have been missed while it was away"
    );
    store.announce_change("tenant-a").await.expect("announce");
    assert_eq!(
        next(&mut feed).await,
        Some(TenantChange::Changed("tenant-a".into()))
    );
}
