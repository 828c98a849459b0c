//! What every Tributary service shares: configuration, Connect and Forge authentication, the event
//! envelope, the store, Kafka settings, telemetry, the shutdown signal and the binaries'
//! `main`.

pub mod binary;
pub mod config;
pub mod connect;
pub mod crypto;
pub mod envelope;
pub mod forge;
pub mod hosts;
pub mod json_check;
pub mod kafka;
pub mod routing;
pub mod shutdown;
pub mod store;
pub mod telemetry;

pub use config::Config;
