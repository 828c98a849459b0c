//! When to try a Confluence request again, and how long the answer asks to wait.
//!
//! Atlassian's advice: back off as [`BackoffSchedule`](crate::backoff::BackoffSchedule)
//! does, wait at least `Retry-After`, and retry only idempotent requests on server errors,
//! timeouts and connection errors. 429 and 503 mean the request was not processed, and a
//! connection that could not be made carried nothing, so they are retried whatever the
//! method.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::observe::RetryReason;

/// How the outcome of one attempt bears on retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retryable {
    /// Retried whatever the method (the server did not process the request).
    Always(RetryReason),
    /// Retried only when repeating the request is harmless.
    IfIdempotent(RetryReason),
    Never,
}

impl Retryable {
    pub fn for_status(status: u16) -> Retryable {
        match status {
            429 => Retryable::Always(RetryReason::RateLimited),
            503 => Retryable::Always(RetryReason::Unavailable),
            408 => Retryable::IfIdempotent(RetryReason::Timeout),
            500 | 502 | 504 => Retryable::IfIdempotent(RetryReason::ServerError),
            _ => Retryable::Never,
        }
    }

    /// The reason label if this outcome is retried for a request of this kind.
    pub fn reason(self, idempotent: bool) -> Option<RetryReason> {
        match self {
            Retryable::Always(reason) => Some(reason),
            Retryable::IfIdempotent(reason) if idempotent => Some(reason),
            _ => None,
        }
    }
}

/// `Retry-After` as seconds (possibly fractional) or an HTTP date; anything else is ignored.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::try_from_secs_f64(seconds).ok())
            .flatten();
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_parses_seconds_and_dates_and_ignores_junk() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static(" 1.5 "));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("-3"));
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
    }

    #[test]
    fn only_429_and_503_are_retried_for_every_method() {
        assert_eq!(
            Retryable::for_status(429).reason(false),
            Some(RetryReason::RateLimited)
        );
        assert_eq!(
            Retryable::for_status(503).reason(false),
            Some(RetryReason::Unavailable)
        );
        assert_eq!(Retryable::for_status(500).reason(false), None);
        assert_eq!(
            Retryable::for_status(500).reason(true),
            Some(RetryReason::ServerError)
        );
        assert_eq!(
            Retryable::for_status(408).reason(true),
            Some(RetryReason::Timeout)
        );
        assert_eq!(Retryable::for_status(404).reason(true), None);
        assert_eq!(Retryable::for_status(501).reason(true), None);
    }
}
