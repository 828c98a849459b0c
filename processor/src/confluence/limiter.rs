//! Per-tenant good citizenship: a cap on requests in flight, and pacing that spreads
//! requests out when Confluence says the app is close to its rate limit, before it answers
//! 429. A spent quota is not waited out here but by a pause (`pauses`) every replica sees.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::observe::{self, ThrottleReason};
use super::signals::RateLimitSignals;

/// Bounds on the gap between two requests of a tenant while paced.
const MIN_PACE: Duration = Duration::from_millis(50);
const MAX_PACE: Duration = Duration::from_secs(5);
/// First gap when pacing starts without a reset time to spread requests over.
const FIRST_PACE: Duration = Duration::from_millis(100);
/// Gaps shorter than this after easing off end pacing.
const PACE_OFF_BELOW: Duration = Duration::from_millis(10);

#[derive(Debug, Default)]
struct Pace {
    /// Gap kept between the starts of two requests; zero when not pacing.
    interval: Duration,
    /// The earliest start of the next request while pacing.
    next_start: Option<Instant>,
}

/// One tenant's limits, shared by every client of that tenant in the process.
#[derive(Debug)]
pub(crate) struct TenantLimiter {
    permits: Arc<Semaphore>,
    pace: Mutex<Pace>,
}

impl TenantLimiter {
    pub fn new(max_in_flight: usize) -> TenantLimiter {
        TenantLimiter {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            pace: Mutex::new(Pace::default()),
        }
    }

    /// Waits for this request's turn under pacing, then for a slot in flight.
    /// The slot is released when the returned permit is dropped.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, AcquireError> {
        let start = self.reserve_start(Instant::now());
        let now = Instant::now();
        if start > now {
            observe::record_throttled(ThrottleReason::Pacing, start - now);
            tokio::time::sleep_until(start).await;
        }
        // The semaphore is never closed, so this only fails if that ever changes.
        self.permits.clone().acquire_owned().await
    }

    /// Takes the next start slot: one interval after the previous paced start, so that
    /// concurrent waiters are spread out rather than woken together.
    fn reserve_start(&self, now: Instant) -> Instant {
        let mut pace = self.pace.lock().unwrap_or_else(PoisonError::into_inner);
        let mut start = now;
        if !pace.interval.is_zero() {
            if let Some(next) = pace.next_start {
                start = start.max(next);
            }
            pace.next_start = Some(start + pace.interval);
        }
        start
    }

    /// Learns from one answer's status and rate-limit headers.
    pub fn observe(&self, status: u16, signal: &RateLimitSignals) {
        let mut pace = self.pace.lock().unwrap_or_else(PoisonError::into_inner);
        if signal.near_limit || status == 429 {
            let spread = match (signal.remaining, signal.reset_in) {
                (Some(left), Some(reset_in)) if left > 0 => Some(reset_in.div_f64(left as f64)),
                _ => None,
            };
            pace.interval = spread
                .unwrap_or_else(|| (pace.interval * 2).max(FIRST_PACE))
                .clamp(MIN_PACE, MAX_PACE);
        } else if !pace.interval.is_zero() {
            pace.interval /= 2;
            if pace.interval < PACE_OFF_BELOW {
                pace.interval = Duration::ZERO;
                pace.next_start = None;
            }
        }
    }

    #[cfg(test)]
    fn interval(&self) -> Duration {
        self.pace
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .interval
    }
}

/// The limiters of every tenant this process has called. Tenants are few and long-lived,
/// and replacing a limiter in use would briefly double its tenant's cap, so entries stay.
#[derive(Debug)]
pub(crate) struct Limiters {
    max_in_flight: usize,
    by_tenant: Mutex<HashMap<String, Arc<TenantLimiter>>>,
}

impl Limiters {
    pub fn new(max_in_flight: usize) -> Limiters {
        Limiters {
            max_in_flight,
            by_tenant: Mutex::new(HashMap::new()),
        }
    }

    pub fn for_tenant(&self, client_key: &str) -> Arc<TenantLimiter> {
        let mut map = self
            .by_tenant
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(client_key.to_string())
            .or_insert_with(|| Arc::new(TenantLimiter::new(self.max_in_flight)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn near_limit_spaces_requests_out_and_easing_off_ends_pacing() {
        let limiter = TenantLimiter::new(8);
        let near = RateLimitSignals {
            near_limit: true,
            ..Default::default()
        };
        limiter.observe(200, &near);
        assert_eq!(limiter.interval(), FIRST_PACE);
        let began = Instant::now();
        for _ in 0..5 {
            drop(limiter.admit().await.expect("admitted"));
        }
        assert!(
            Instant::now() - began >= FIRST_PACE * 4,
            "five paced starts span at least four gaps"
        );
        for _ in 0..6 {
            limiter.observe(200, &RateLimitSignals::default());
        }
        assert_eq!(limiter.interval(), Duration::ZERO);
        let began = Instant::now();
        drop(limiter.admit().await.expect("admitted"));
        drop(limiter.admit().await.expect("admitted"));
        assert_eq!(Instant::now(), began);
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_and_reset_spread_the_quota_left() {
        let limiter = TenantLimiter::new(8);
        let signal = RateLimitSignals {
            near_limit: true,
            remaining: Some(10),
            reset_in: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        limiter.observe(200, &signal);
        assert_eq!(limiter.interval(), Duration::from_millis(500));
    }

    #[test]
    fn one_limiter_per_tenant() {
        let limiters = Limiters::new(2);
        let a = limiters.for_tenant("a");
        assert!(Arc::ptr_eq(&a, &limiters.for_tenant("a")));
        assert!(!Arc::ptr_eq(&a, &limiters.for_tenant("b")));
    }
}
