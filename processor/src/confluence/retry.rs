//! When and how long to wait before trying a Confluence request again.
//!
//! Atlassian's advice: start near 2 s, double each retry with jitter x0.7-1.3, cap the delay
//! and the attempts, wait at least `Retry-After`, and retry only idempotent requests on
//! server errors, timeouts and connection errors. 429 and 503 mean the request was not
//! processed, so they are retried whatever the method.

use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::metrics::RetryReason;

/// The limits of one request's retries, from configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Attempts including the first.
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The delays between attempts for one request, as `backon` consumes them.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            next_delay: self.initial_delay,
            max_delay: self.max_delay,
            retries_left: self.max_attempts.saturating_sub(1),
        }
    }

    /// The wait before the next attempt: the backoff's, or longer if the answer asked for
    /// it. `None` stops retrying: the backoff is used up, or the server asked for a wait
    /// beyond the delay cap, which is better left to the caller (the error carries it).
    pub fn adjust(
        &self,
        retry_after: Option<Duration>,
        backoff: Option<Duration>,
    ) -> Option<Duration> {
        let backoff = backoff?;
        match retry_after {
            Some(wait) if wait > self.max_delay => None,
            Some(wait) => Some(backoff.max(wait)),
            None => Some(backoff),
        }
    }
}

/// Exponential backoff with x0.7-1.3 jitter, each delay capped after the jitter.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next_delay: Duration,
    max_delay: Duration,
    retries_left: u32,
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.retries_left == 0 {
            return None;
        }
        self.retries_left -= 1;
        let base = self.next_delay.min(self.max_delay);
        self.next_delay = self.next_delay.saturating_mul(2);
        let jitter = rand::thread_rng().gen_range(0.7..=1.3);
        Some(base.mul_f64(jitter).min(self.max_delay))
    }
}

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

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(30),
        }
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter_and_stops_after_the_attempts() {
        for _ in 0..200 {
            let delays: Vec<Duration> = policy().backoff().collect();
            assert_eq!(delays.len(), 3, "4 attempts leave 3 waits");
            for (delay, base) in delays.iter().zip([2.0, 4.0, 8.0]) {
                let secs = delay.as_secs_f64();
                assert!(
                    (base * 0.7 - 1e-9..=base * 1.3 + 1e-9).contains(&secs),
                    "{secs} s is outside the jitter band around {base} s"
                );
            }
        }
    }

    #[test]
    fn delays_never_exceed_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 12,
            initial_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(30),
        };
        let delays: Vec<Duration> = policy.backoff().collect();
        assert_eq!(delays.len(), 11);
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(30)));
        assert!(delays[6..].iter().all(|d| *d >= Duration::from_secs(21)));
    }

    #[test]
    fn retry_after_is_a_floor_and_a_wait_beyond_the_cap_stops_retrying() {
        let policy = policy();
        let backoff = Some(Duration::from_millis(1500));
        assert_eq!(
            policy.adjust(Some(Duration::from_secs(5)), backoff),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            policy.adjust(Some(Duration::from_secs(1)), backoff),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(policy.adjust(Some(Duration::from_secs(120)), backoff), None);
        assert_eq!(policy.adjust(Some(Duration::from_secs(1)), None), None);
    }

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
