//! The processor's metric names. Dashboards and alerts rely on exactly these; labels stay
//! low-cardinality (event names, handler names, topics, partitions, fixed reasons).

pub const EVENTS_CONSUMED: &str = "tributary_processor_events_consumed_total";
pub const EVENTS_HANDLED: &str = "tributary_processor_events_handled_total";
pub const HANDLER_DURATION: &str = "tributary_processor_handler_duration_seconds";
pub const HANDLER_RETRIES: &str = "tributary_processor_handler_retries_total";
pub const DEAD_LETTERED: &str = "tributary_processor_dead_lettered_total";
pub const IN_FLIGHT: &str = "tributary_processor_in_flight_events";
pub const CONSUMER_LAG: &str = "tributary_processor_consumer_lag_messages";
pub const END_TO_END: &str = tributary_common::telemetry::END_TO_END_METRIC;
pub const BATCH_SIZE: &str = tributary_common::telemetry::BATCH_SIZE_METRIC;
pub const EVENTS_PARKED: &str = "tributary_processor_events_parked_total";
pub const PARKED_EVENTS: &str = "tributary_processor_parked_events";
pub const BUDGET_EXHAUSTED: &str = "tributary_processor_retry_budget_exhausted_total";

/// How one handler's run of one event ended (`outcome` label of [`EVENTS_HANDLED`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The handler succeeded and its record committed.
    Success,
    /// One attempt failed (each failed attempt counts, retried or not).
    Failure,
    /// The event went to the dead-letter topic.
    DeadLettered,
    /// The handler had handled this event before; it did not run again.
    Duplicate,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Duplicate => "duplicate",
        }
    }
}

pub(crate) fn handled(event: &str, outcome: Outcome) {
    metrics::counter!(EVENTS_HANDLED, "event" => event.to_string(), "outcome" => outcome.as_str())
        .increment(1);
}

/// Time from the event's arrival at the ingest (its `ce_time`) until every handler finished:
/// what `tributary loadgen --processor-metrics` reports as end-to-end latency.
pub(crate) fn end_to_end(arrived: chrono::DateTime<chrono::Utc>) {
    end_to_end_on(&metrics::histogram!(END_TO_END), arrived);
}

/// [`end_to_end`] on a histogram handle taken once, for many events.
pub(crate) fn end_to_end_on(
    histogram: &metrics::Histogram,
    arrived: chrono::DateTime<chrono::Utc>,
) {
    let elapsed = (chrono::Utc::now() - arrived)
        .num_microseconds()
        .unwrap_or(0)
        .max(0);
    histogram.record(elapsed as f64 / 1_000_000.0);
}

/// Registers descriptions once, so `/metrics` explains each series.
pub(crate) fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(EVENTS_CONSUMED, "Records received from Kafka, by topic.");
    describe_counter!(
        EVENTS_HANDLED,
        "Handler runs by event type and outcome (success, failure, dead_lettered, duplicate)."
    );
    describe_histogram!(HANDLER_DURATION, "Time one handler attempt took.");
    describe_counter!(HANDLER_RETRIES, "Retries of transiently failing handlers.");
    describe_counter!(
        DEAD_LETTERED,
        "Events written to a dead-letter topic, by origin topic and reason."
    );
    describe_gauge!(IN_FLIGHT, "Events received and not yet finished.");
    describe_histogram!(
        END_TO_END,
        "Seconds from the event's arrival at the ingest to its last handler finishing."
    );
    describe_histogram!(
        BATCH_SIZE,
        "Records per batch (one handled-before query and one commit each)."
    );
    describe_counter!(
        EVENTS_PARKED,
        "Events parked in the database until a retry is due, by why (retry: its own retry is due later; behind: an earlier event of its tenant is parked)."
    );
    describe_gauge!(
        PARKED_EVENTS,
        "Events parked in the database on the partitions this processor holds."
    );
    describe_counter!(
        BUDGET_EXHAUSTED,
        "Events dead-lettered because their retry budget (processor_max_attempts) was spent."
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Messages between the partition's end and the group's committed offset."
    );
}
