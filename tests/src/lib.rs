//! What the end-to-end tests share beyond the devkit's harness: their world, the hostile
//! corpus, the reading of a run's end state, and the test processor's traces.

pub mod corpus;
pub mod prometheus;
pub mod verdict;
pub mod world;

/// The tenant-state key where the test processor appends the ids of handled events, in the
/// order it handled them.
pub const HANDLED_KEY: &str = "handled_event_ids";
/// The test processor's handler name, which keys its handled-event records.
pub const HANDLER_NAME: &str = "e2e.record_and_comment";
