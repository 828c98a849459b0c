//! The dead-letter topic: what goes there, with which origin headers, and the operator's
//! commands to list and replay it.

mod admin;
mod writer;

pub use admin::{AdminError, DeadLetter, ReplayReport, Selection, list, replay, summarize};
pub(crate) use writer::{DeadLetterWriter, Letter};

/// Headers the runtime adds to a dead-lettered record (the event's own headers stay).
pub mod header {
    /// Every header the runtime adds starts with this; replay strips them.
    pub const PREFIX: &str = "tributary_";
    pub const ORIGIN_TOPIC: &str = "tributary_origin_topic";
    pub const ORIGIN_PARTITION: &str = "tributary_origin_partition";
    pub const ORIGIN_OFFSET: &str = "tributary_origin_offset";
    pub const HANDLER: &str = "tributary_handler";
    pub const ERROR: &str = "tributary_error";
    pub const ATTEMPTS: &str = "tributary_attempts";
    pub const REASON: &str = "tributary_reason";
    pub const DEAD_LETTERED_AT: &str = "tributary_dead_lettered_at";
    /// Set on a record `tributary dlq replay` published again: its handlers may have made
    /// part of their effects before it was dead-lettered.
    pub const REPLAYED_AT: &str = "tributary_replayed_at";
}

/// Why an event was dead-lettered (`reason` label and header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A handler kept failing transiently until the last attempt.
    Handler,
    /// A handler failed permanently.
    Permanent,
    /// The record is not a valid event envelope.
    Undecodable,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Handler => "handler",
            Reason::Permanent => "permanent",
            Reason::Undecodable => "undecodable",
        }
    }
}
