//! The SQLite counterpart of [`crate::TestDatabase`]: a migrated database in a file of one
//! test's own, deleted when the value is dropped.

use std::path::PathBuf;
use std::time::Duration;

use sqlx::SqlitePool;
use tributary_common::store::{self, Database};

pub struct TestSqlite {
    /// The pool (`.into()` makes it a store `Database`).
    pub pool: SqlitePool,
    pub url: String,
    pub path: PathBuf,
}

impl TestSqlite {
    pub async fn create() -> TestSqlite {
        let path = std::env::temp_dir().join(format!(
            "tributary-test-{}-{}.db",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let url = format!("sqlite:{}", path.display());
        let db = store::connect_url(&url, 8, Duration::from_secs(5))
            .await
            .expect("open a SQLite test database");
        store::migrate(&db).await.expect("SQLite migrations apply");
        let Database::Sqlite(pool) = db else {
            panic!("a sqlite: URL opens a SQLite database");
        };
        TestSqlite { pool, url, path }
    }
}

impl Drop for TestSqlite {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = self.path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}
