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
pub const REQUEST_OUTCOMES_TOTAL: &str = "tributary_confluence_request_outcomes_total";
pub const THROTTLED_SECONDS_TOTAL: &str = "tributary_confluence_throttled_seconds_total";
pub const PAUSES_TOTAL: &str = "tributary_confluence_pauses_total";
pub const RATE_LIMITED_TOTAL: &str = "tributary_confluence_rate_limited_total";
pub const PAUSES_IN_FORCE: &str = "tributary_confluence_pauses_in_force";

/// Why a call waited before it went out (the `reason` label of the throttled counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleReason {
    /// The tenant's quota is spent (a pause shared by every replica).
    TenantQuota,
    /// The app's global quota is spent.
    AppQuota,
    /// Spread out because Confluence said the quota is nearly spent.
    Pacing,
    /// Backing off before a retry.
    Backoff,
}

impl ThrottleReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ThrottleReason::TenantQuota => "tenant_quota",
            ThrottleReason::AppQuota => "app_quota",
            ThrottleReason::Pacing => "pacing",
            ThrottleReason::Backoff => "backoff",
        }
    }

    fn index(self) -> usize {
        match self {
            ThrottleReason::TenantQuota => 0,
            ThrottleReason::AppQuota => 1,
            ThrottleReason::Pacing => 2,
            ThrottleReason::Backoff => 3,
        }
    }

    pub fn of_quota(scope: super::signals::QuotaScope) -> ThrottleReason {
        match scope {
            super::signals::QuotaScope::Tenant => ThrottleReason::TenantQuota,
            super::signals::QuotaScope::App => ThrottleReason::AppQuota,
        }
    }
}

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
        REQUEST_OUTCOMES_TOTAL,
        "Confluence REST requests as the caller saw them in the end, by outcome (throttled: not sent, a quota pause was in force)"
    );
    metrics::describe_counter!(
        THROTTLED_SECONDS_TOTAL,
        metrics::Unit::Seconds,
        "Seconds Confluence calls waited where they were, by reason (tenant_quota, app_quota, pacing, backoff)"
    );
    metrics::describe_counter!(
        RATE_LIMITED_TOTAL,
        "429 answers, by whose quota RateLimit-Reason says is spent (tenant or app)"
    );
    metrics::describe_counter!(
        PAUSES_TOTAL,
        "Quota pauses started by a rate-limit answer, by scope (tenant or app)"
    );
    metrics::describe_gauge!(
        PAUSES_IN_FORCE,
        "Quota pauses in force, as this replica last read them, by scope"
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

/// How a request ended for its caller.
pub(crate) fn record_outcome(outcome: &'static str) {
    metrics::counter!(REQUEST_OUTCOMES_TOTAL, "outcome" => outcome).increment(1);
}

pub(crate) fn record_rate_limited(scope: super::signals::QuotaScope) {
    metrics::counter!(RATE_LIMITED_TOTAL, "scope" => scope.as_str()).increment(1);
}

pub(crate) fn record_pause(scope: super::signals::QuotaScope) {
    metrics::counter!(PAUSES_TOTAL, "scope" => scope.as_str()).increment(1);
}

pub(crate) fn record_pauses_in_force(tenants: u64, app: u64) {
    metrics::gauge!(PAUSES_IN_FORCE, "scope" => "tenant").set(tenants as f64);
    metrics::gauge!(PAUSES_IN_FORCE, "scope" => "app").set(app as f64);
}

/// Time a call waited where it was, by why.
pub(crate) fn record_throttled(reason: ThrottleReason, waited: Duration) {
    static WAITED_MICROS: [AtomicU64; 4] = [
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    ];
    let seconds = whole_seconds_crossed(&WAITED_MICROS[reason.index()], waited);
    if seconds > 0 {
        metrics::counter!(THROTTLED_SECONDS_TOTAL, "reason" => reason.as_str()).increment(seconds);
    }
    if matches!(reason, ThrottleReason::Pacing | ThrottleReason::Backoff) {
        record_rate_limit_wait(waited);
    }
}

// Counters take whole numbers, and most waits are fractions of a second, so the exact total
// is kept in microseconds and the counter advances by every whole second it crosses. The
// exported value is the floor of the true total.
fn whole_seconds_crossed(total: &AtomicU64, waited: Duration) -> u64 {
    let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
    if micros == 0 {
        return 0;
    }
    let before = total.fetch_add(micros, Ordering::Relaxed);
    before.saturating_add(micros) / 1_000_000 - before / 1_000_000
}

pub(crate) fn record_rate_limit_wait(waited: Duration) {
    static WAITED_MICROS: AtomicU64 = AtomicU64::new(0);
    let seconds = whole_seconds_crossed(&WAITED_MICROS, waited);
    metrics::counter!(RATE_LIMIT_WAIT_SECONDS_TOTAL).increment(seconds);
}

pub(crate) fn record_token_refresh(outcome: &'static str) {
    metrics::counter!(TOKEN_REFRESHES_TOTAL, "outcome" => outcome).increment(1);
}
