//! The client's Prometheus metrics. Labels stay low-cardinality: methods, status classes,
//! reasons and outcomes only, never a tenant, user or path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub const REQUESTS_TOTAL: &str = "tributary_confluence_requests_total";
pub const REQUEST_DURATION_SECONDS: &str = "tributary_confluence_request_duration_seconds";
pub const RETRIES_TOTAL: &str = "tributary_confluence_retries_total";
pub const RATE_LIMIT_WAIT_SECONDS_TOTAL: &str =
    "tributary_confluence_rate_limit_wait_seconds_total";
pub const TOKEN_REFRESHES_TOTAL: &str = "tributary_confluence_token_refreshes_total";

/// Why a request was tried again (the `reason` label of the retries counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    RateLimited,
    Unavailable,
    ServerError,
    Timeout,
    Connect,
}

impl RetryReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::RateLimited => "rate_limited",
            RetryReason::Unavailable => "unavailable",
            RetryReason::ServerError => "server_error",
            RetryReason::Timeout => "timeout",
            RetryReason::Connect => "connect",
        }
    }
}

pub(crate) fn describe() {
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        "Confluence REST requests sent, by method and status class (error: no answer)"
    );
    metrics::describe_histogram!(
        REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time of one Confluence REST attempt, answer body included"
    );
    metrics::describe_counter!(
        RETRIES_TOTAL,
        "Confluence REST requests tried again, by reason"
    );
    metrics::describe_counter!(
        RATE_LIMIT_WAIT_SECONDS_TOTAL,
        metrics::Unit::Seconds,
        "Seconds requests waited because of Confluence rate limits and pacing"
    );
    metrics::describe_counter!(
        TOKEN_REFRESHES_TOTAL,
        "User access tokens fetched from the authorization server, by outcome"
    );
}

/// A method label from a fixed set, so an odd method cannot create new series.
fn method_label(method: &reqwest::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        _ => "error",
    }
}

/// One attempt: `status` is `None` when no answer arrived.
pub(crate) fn record_attempt(method: &reqwest::Method, status: Option<u16>, took: Duration) {
    let method = method_label(method);
    metrics::counter!(REQUESTS_TOTAL, "method" => method, "status_class" => status_class(status))
        .increment(1);
    metrics::histogram!(REQUEST_DURATION_SECONDS, "method" => method).record(took.as_secs_f64());
}

pub(crate) fn record_retry(reason: RetryReason) {
    metrics::counter!(RETRIES_TOTAL, "reason" => reason.as_str()).increment(1);
}

pub(crate) fn record_rate_limit_wait(waited: Duration) {
    // Counters take whole numbers, and most waits are fractions of a second, so the exact
    // total is kept in microseconds and the counter advances by every whole second it
    // crosses. The exported value is the floor of the true total.
    static WAITED_MICROS: AtomicU64 = AtomicU64::new(0);
    let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
    if micros == 0 {
        return;
    }
    let before = WAITED_MICROS.fetch_add(micros, Ordering::Relaxed);
    let whole_seconds = before.saturating_add(micros) / 1_000_000 - before / 1_000_000;
    metrics::counter!(RATE_LIMIT_WAIT_SECONDS_TOTAL).increment(whole_seconds);
}

pub(crate) fn record_token_refresh(outcome: &'static str) {
    metrics::counter!(TOKEN_REFRESHES_TOTAL, "outcome" => outcome).increment(1);
}
