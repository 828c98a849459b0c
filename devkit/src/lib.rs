//! The other side of a Tributary installation, for tests, demos and benchmarks only: a
//! simulated Confluence Cloud (REST API and OAuth 2.0 token endpoint), Forge's JWKS and
//! invocation tokens, Atlassian's
//! install-key server and the signers of what Confluence sends, an embedded Kafka broker,
//! throwaway databases, and the end-to-end harness that runs the services among them.
//!
//! No production library depends on this crate; `ingest`, `processor` and `common` use it
//! in their tests only.

pub mod confluence;
pub mod forge;
pub mod harness;
pub mod install_keys;
pub mod kafka;
mod pg_cluster;
mod postgres;
mod secret_key;
mod sqlite;
pub mod token;

pub use install_keys::{
    INSTALL_KEY_1, INSTALL_KEY_2, INSTALL_PUB_1, INSTALL_PUB_2, InstallKey, KeyServer,
};
pub use kafka::{EmbeddedKafka, MockKafka, TestBroker};
pub use pg_cluster::{PgCluster, free_port};
pub use postgres::{TestDatabase, admin_database_url, replace_database};
pub use secret_key::{TEST_SECRET_KEY, test_keyring, test_secret_key_base64};
pub use sqlite::TestSqlite;
pub use token::Token;
