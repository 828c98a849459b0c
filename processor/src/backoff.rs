//! The one backoff schedule of the processor, for handlers retried by the runtime and for
//! Confluence requests retried by the client.
//!
//! Atlassian's advice for its APIs, and sound for handlers too: double each delay with jitter
//! x0.7-1.3, cap the delay and the attempts.

use std::time::Duration;

use rand::Rng;

/// The limits of one piece of work's retries, from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BackoffSchedule {
    /// Attempts including the first.
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl BackoffSchedule {
    /// The delays between attempts, as `backon` consumes them.
    pub fn delays(&self) -> Delays {
        Delays {
            next_delay: self.initial_delay,
            max_delay: self.max_delay,
            retries_left: self.max_attempts.saturating_sub(1),
        }
    }

    /// The wait before the next attempt: the backoff's, or longer if the other side asked
    /// for it (`Retry-After`). `None` stops retrying: the backoff is used up, or the wait
    /// asked for is beyond the delay cap, which is better left to the caller.
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
pub(crate) struct Delays {
    next_delay: Duration,
    max_delay: Duration,
    retries_left: u32,
}

impl Iterator for Delays {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BackoffSchedule {
        BackoffSchedule {
            max_attempts: 4,
            initial_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(30),
        }
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter_and_stops_after_the_attempts() {
        for _ in 0..200 {
            let delays: Vec<Duration> = policy().delays().collect();
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
        let policy = BackoffSchedule {
            max_attempts: 12,
            initial_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(30),
        };
        let delays: Vec<Duration> = policy.delays().collect();
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
}
