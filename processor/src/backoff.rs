//! The one backoff schedule of the processor, and the one retry budget of each event: its
//! handlers run again and their Confluence requests sent again all take from it, so client
//! retries and handler retries cannot multiply.
//!
//! Atlassian's advice for its APIs, and sound for handlers too: wait at least what the other
//! side asked (`Retry-After`, whatever its size), otherwise double each delay with jitter
//! x0.7-1.3 up to a cap, and bound the attempts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

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
    /// The schedule of every retry in the processor: handlers' and Confluence requests'.
    pub fn from_config(config: &tributary_common::Config) -> BackoffSchedule {
        BackoffSchedule {
            max_attempts: u32::try_from(config.processor_max_attempts).unwrap_or(u32::MAX),
            initial_delay: Duration::from_millis(config.processor_retry_initial_ms),
            max_delay: Duration::from_millis(config.processor_retry_max_ms),
        }
    }

    /// The wait before retry number `retry` (0 for the first): the jittered backoff, or
    /// `floor` when that is longer, however long (what the other side asked is honoured).
    pub fn delay(&self, retry: u32, floor: Option<Duration>) -> Duration {
        let base = self
            .initial_delay
            .saturating_mul(2u32.saturating_pow(retry.min(30)))
            .min(self.max_delay);
        let jitter = rand::thread_rng().gen_range(0.7..=1.3);
        let backoff = base.mul_f64(jitter).min(self.max_delay);
        floor.map_or(backoff, |floor| floor.max(backoff))
    }
}

/// One event's retries, shared by its handler runs and their Confluence requests.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    schedule: BackoffSchedule,
    used: AtomicU32,
    /// Whether a Confluence request may sleep through a short retry where it is: not inside
    /// a batch, whose commit would wait for it.
    wait_in_place: bool,
    /// The longest wait an answer asked for, until when: the runtime's next retry of the
    /// event waits at least until then.
    asked_until: Mutex<Option<Instant>>,
}

impl RetryBudget {
    /// A budget of `schedule.max_attempts - 1` retries, of which `used` are spent.
    pub fn new(schedule: BackoffSchedule, used: u32, wait_in_place: bool) -> RetryBudget {
        RetryBudget {
            schedule,
            used: AtomicU32::new(used),
            wait_in_place,
            asked_until: Mutex::new(None),
        }
    }

    pub fn used(&self) -> u32 {
        self.used.load(Ordering::Relaxed)
    }

    fn limit(&self) -> u32 {
        self.schedule.max_attempts.saturating_sub(1)
    }

    pub fn is_spent(&self) -> bool {
        self.used() >= self.limit()
    }

    pub fn may_wait_in_place(&self) -> bool {
        self.wait_in_place
    }

    /// The wait before the next retry, without taking it; `None` when none is left.
    pub fn next_delay(&self, floor: Option<Duration>) -> Option<Duration> {
        let used = self.used();
        (used < self.limit()).then(|| self.schedule.delay(used, floor))
    }

    /// Takes one retry; false when none was left.
    pub fn take(&self) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used < self.limit()).then_some(used + 1)
            })
            .is_ok()
    }

    /// Remembers that an answer asked for `wait` before the next call.
    pub fn ask(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut asked = self
            .asked_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if asked.is_none_or(|earlier| earlier < until) {
            *asked = Some(until);
        }
    }

    /// What is left of the longest wait an answer asked for.
    pub fn asked_wait(&self) -> Option<Duration> {
        let asked = *self
            .asked_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        asked.and_then(|until| until.checked_duration_since(Instant::now()))
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
    fn backoff_doubles_with_bounded_jitter_up_to_the_cap() {
        let policy = policy();
        for _ in 0..200 {
            for (retry, base) in [(0, 2.0), (1, 4.0), (2, 8.0)] {
                let secs = policy.delay(retry, None).as_secs_f64();
                assert!(
                    (base * 0.7 - 1e-9..=base * 1.3 + 1e-9).contains(&secs),
                    "{secs} s is outside the jitter band around {base} s"
                );
            }
            assert!(policy.delay(11, None) <= Duration::from_secs(30));
            assert!(policy.delay(11, None) >= Duration::from_secs(21));
        }
    }

    #[test]
    fn a_floor_of_any_size_is_honoured_and_the_budget_is_shared() {
        let policy = policy();
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(300))),
            Duration::from_secs(300)
        );
        let first = policy.delay(0, None).as_secs_f64();
        assert!((1.4..=2.6).contains(&first), "{first}");
        assert!(policy.delay(10, None) <= Duration::from_secs(30));

        let budget = RetryBudget::new(policy, 1, true);
        assert!(!budget.is_spent());
        assert!(budget.next_delay(None).is_some());
        assert!(budget.take());
        assert!(budget.take());
        assert!(
            budget.is_spent(),
            "4 attempts are 3 retries, one spent before"
        );
        assert!(!budget.take());
        assert_eq!(budget.next_delay(None), None);
        assert_eq!(budget.used(), 3);

        assert_eq!(budget.asked_wait(), None);
        budget.ask(Duration::from_secs(300));
        budget.ask(Duration::from_secs(5));
        assert!(
            budget
                .asked_wait()
                .is_some_and(|wait| wait > Duration::from_secs(290))
        );
    }
}
