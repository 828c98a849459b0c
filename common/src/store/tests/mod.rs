//! Store tests. Every body runs twice: against a PostgreSQL database of the test's own and
//! against a SQLite file of its own.

use crate::crypto::SecretKeyring;

/// The devkit's test key as this crate's keyring (the devkit's own `test_keyring` is of the
/// library build of this crate, another type inside its unit tests).
fn test_keyring() -> SecretKeyring {
    SecretKeyring::new(tributary_devkit::TEST_SECRET_KEY, &[])
}

/// A `#[tokio::test]` per backend for each named `async fn(&Database)`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = tributary_devkit::TestDatabase::create().await;
                    super::$name(&db.pool.clone().into()).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = tributary_devkit::TestSqlite::create().await;
                    super::$name(&db.pool.clone().into()).await;
                }
            )*
        }
    };
}

mod forge;
mod handled;
mod rate_limits;
mod tenant_changes;
mod tenants;
