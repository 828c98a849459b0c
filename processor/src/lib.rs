//! The consumer runtime, handler API and Confluence REST client.
mod acting_user;
mod backoff;
pub mod builtin;
pub mod confluence;
pub mod context;
pub mod dlq;
pub mod event;
mod forge_payload;
pub mod handler;
pub mod observe;
pub mod payload;
pub mod processor;
mod runtime;
pub mod service;
pub mod state;
mod tenants;

pub use context::Context;
pub use event::{Event, EventSource};
pub use handler::{Handler, HandlerError};
pub use processor::{Processor, ProcessorBuilder, ProcessorError, ProcessorStatus};
