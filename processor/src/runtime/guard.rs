//! The failure-ratio guard: a bad deploy or a broken dependency should stop the consumer,
//! not drain the topic into the dead-letter topic.

use std::collections::VecDeque;

#[derive(Debug)]
pub(crate) struct FailureGuard {
    recent: VecDeque<bool>,
    window: usize,
    max_ratio: f64,
    failures: usize,
}

impl FailureGuard {
    pub fn new(window: usize, max_ratio: f64) -> Self {
        FailureGuard {
            recent: VecDeque::with_capacity(window),
            window: window.max(1),
            max_ratio,
            failures: 0,
        }
    }

    /// Records one finished event; true when failures now exceed the allowed share of the
    /// window. The share is of the whole window, not of the events seen so far, so a few
    /// early failures after a start do not trip it.
    pub fn record(&mut self, failed: bool) -> bool {
        if self.recent.len() == self.window && self.recent.pop_front() == Some(true) {
            self.failures -= 1;
        }
        self.recent.push_back(failed);
        if failed {
            self.failures += 1;
        }
        self.tripped()
    }

    pub fn tripped(&self) -> bool {
        self.failures as f64 > self.max_ratio * self.window as f64
    }

    pub fn failures(&self) -> usize {
        self.failures
    }

    pub fn window(&self) -> usize {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_only_above_the_share_of_the_window() {
        let mut guard = FailureGuard::new(10, 0.5);
        for _ in 0..5 {
            assert!(!guard.record(true));
        }
        assert!(guard.record(true), "6 of 10 is more than half");
    }

    #[test]
    fn old_failures_leave_the_window() {
        let mut guard = FailureGuard::new(4, 0.5);
        assert!(!guard.record(true));
        assert!(!guard.record(true));
        for _ in 0..4 {
            assert!(!guard.record(false));
        }
        assert_eq!(guard.failures(), 0);
        assert!(!guard.record(true));
        assert!(!guard.record(true));
        assert!(guard.record(true));
    }

    #[test]
    fn ratio_one_never_trips_and_zero_trips_at_once() {
        let mut lenient = FailureGuard::new(3, 1.0);
        assert!((0..10).all(|_| !lenient.record(true)));
        let mut strict = FailureGuard::new(3, 0.0);
        assert!(strict.record(true));
    }
}
