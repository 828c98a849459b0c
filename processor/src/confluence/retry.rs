//! When to try a Confluence request again, and how long the answer asks to wait.
//!
//! Atlassian's advice: back off as [`BackoffSchedule`](crate::backoff::BackoffSchedule)
//! does, wait at least `Retry-After` (read in `signals`), and retry only idempotent requests on server errors,
//! timeouts and connection errors. 429 and 503 mean the request was not processed, and a
//! connection that could not be made carried nothing, so they are retried whatever the
//! method.

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

#[cfg(test)]
mod tests {
    use super::*;

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
