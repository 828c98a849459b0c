//! What every Tributary service shares: configuration, Connect authentication, the event
//! envelope, the tenant store, Kafka settings, telemetry and the shutdown signal.

pub mod config;
pub mod connect;
pub mod crypto;
pub mod envelope;
pub mod hosts;
pub mod kafka;
pub mod routing;
pub mod shutdown;
pub mod store;
pub mod telemetry;

pub use config::Config;
