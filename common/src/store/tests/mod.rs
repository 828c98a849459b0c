//! Store tests. Every body runs twice: against a PostgreSQL database of the test's own and
//! against a SQLite file of its own.

/// A `#[tokio::test]` per backend for each named `async fn(&Database)`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = crate::testing::TestDatabase::create().await;
                    super::$name(&db.pool.clone().into()).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = crate::testing::TestSqlite::create().await;
                    super::$name(&db.db).await;
                }
            )*
        }
    };
}

mod handled;
mod tenant_changes;
mod tenants;
