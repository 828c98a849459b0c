//! Kafka client logging that stays readable while the broker is away.
//!
//! librdkafka reports every failed connection attempt, and a metadata request during an
//! outage makes many of them: left alone that floods the log. The broker's state is visible in
//! `/readyz` and in the 503 answers, so one line per second is enough.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;

#[derive(Default)]
pub struct RateLimitedLog {
    last_second: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimitedLog {
    /// Calls `log` with the number of lines suppressed since the last one, at most once per
    /// second.
    fn at_most_once_a_second(&self, log: impl FnOnce(u64)) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last_second.load(Ordering::Relaxed);
        if last != now
            && self
                .last_second
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log(self.suppressed.swap(0, Ordering::Relaxed));
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl ClientContext for RateLimitedLog {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => self.at_most_once_a_second(|suppressed| {
                tracing::warn!(target: "librdkafka", facility, suppressed, "{message}")
            }),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.at_most_once_a_second(|suppressed| {
            tracing::warn!(target: "librdkafka", error = %error, suppressed, "{reason}")
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_logs_once_and_counts_the_rest() {
        let limiter = RateLimitedLog::default();
        let mut logged = Vec::new();
        for _ in 0..100 {
            limiter.at_most_once_a_second(|suppressed| logged.push(suppressed));
        }
        // A second boundary may fall inside the burst: then two lines, never more.
        assert!(!logged.is_empty() && logged.len() <= 2, "{logged:?}");
        let shown = logged.len() as u64;
        let counted: u64 = logged.iter().sum::<u64>() + limiter.suppressed.load(Ordering::Relaxed);
        assert_eq!(counted + shown, 100);
    }
}
