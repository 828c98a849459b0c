//! Per-tenant good citizenship: a cap on requests in flight, and pacing that spreads
//! requests out when Confluence says the app is close to its rate limit.
//!
//! Rate-limit headers are advisory and none is guaranteed, so each is read leniently: a
//! missing or unreadable header simply does not slow anything down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::observe;

/// Below this share of the quota left, requests are paced (Atlassian's NearLimit mark).
const LOW_REMAINING_RATIO: f64 = 0.2;
/// With no known limit, this few requests left counts as low.
const LOW_REMAINING_ABSOLUTE: u64 = 5;
/// Bounds on the gap between two requests of a tenant while paced.
const MIN_PACE: Duration = Duration::from_millis(50);
const MAX_PACE: Duration = Duration::from_secs(5);
/// First gap when pacing starts without a reset time to spread requests over.
const FIRST_PACE: Duration = Duration::from_millis(100);
/// Gaps shorter than this after easing off end pacing.
const PACE_OFF_BELOW: Duration = Duration::from_millis(10);
/// Longest a rate-limit answer may hold a tenant's other requests back.
const MAX_HOLD: Duration = Duration::from_secs(60);

/// What an answer said about the tenant's rate limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct RateLimitSignal {
    pub near_limit: bool,
    pub remaining: Option<u64>,
    /// Time until the quota resets.
    pub reset_in: Option<Duration>,
}

impl RateLimitSignal {
    pub fn from_headers(headers: &HeaderMap) -> RateLimitSignal {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let number = |name: &str| text(name).and_then(|v| v.parse::<u64>().ok());
        let remaining = number("x-ratelimit-remaining");
        let limit = number("x-ratelimit-limit").filter(|l| *l > 0);
        let flagged = text("x-ratelimit-nearlimit").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let low = match (remaining, limit) {
            (Some(left), Some(limit)) => (left as f64) < (limit as f64) * LOW_REMAINING_RATIO,
            (Some(left), None) => left <= LOW_REMAINING_ABSOLUTE,
            _ => false,
        };
        let reset_in = text("x-ratelimit-reset")
            .and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok())
            .and_then(|at| {
                (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                    .to_std()
                    .ok()
            });
        RateLimitSignal {
            near_limit: flagged || low,
            remaining,
            reset_in,
        }
    }
}

#[derive(Debug, Default)]
struct Pace {
    /// Gap kept between the starts of two requests; zero when not pacing.
    interval: Duration,
    /// The earliest start of the next request while pacing.
    next_start: Option<Instant>,
    /// No request starts before this (set by rate-limit answers).
    hold_until: Option<Instant>,
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

    /// Waits for this request's turn under pacing and holds, then for a slot in flight.
    /// The slot is released when the returned permit is dropped.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, AcquireError> {
        let start = self.reserve_start(Instant::now());
        let now = Instant::now();
        if start > now {
            observe::record_rate_limit_wait(start - now);
            tokio::time::sleep_until(start).await;
        }
        // The semaphore is never closed, so this only fails if that ever changes.
        self.permits.clone().acquire_owned().await
    }

    /// Takes the next start slot: after any hold, and one interval after the previous
    /// paced start, so that concurrent waiters are spread out rather than woken together.
    fn reserve_start(&self, now: Instant) -> Instant {
        let mut pace = self.pace.lock().unwrap_or_else(PoisonError::into_inner);
        let mut start = now;
        if let Some(hold) = pace.hold_until {
            start = start.max(hold);
        }
        if !pace.interval.is_zero() {
            if let Some(next) = pace.next_start {
                start = start.max(next);
            }
            pace.next_start = Some(start + pace.interval);
        }
        start
    }

    /// Learns from one answer's status and headers.
    pub fn observe(&self, status: u16, signal: RateLimitSignal, retry_after: Option<Duration>) {
        let now = Instant::now();
        let mut pace = self.pace.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(status, 429 | 503)
            && let Some(wait) = retry_after
        {
            let until = now + wait.min(MAX_HOLD);
            pace.hold_until = Some(pace.hold_until.map_or(until, |h| h.max(until)));
        }
        if signal.remaining == Some(0)
            && let Some(reset_in) = signal.reset_in
        {
            let until = now + reset_in.min(MAX_HOLD);
            pace.hold_until = Some(pace.hold_until.map_or(until, |h| h.max(until)));
        }
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
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    #[test]
    fn signals_are_read_leniently() {
        assert!(
            RateLimitSignal::from_headers(&headers(&[("x-ratelimit-nearlimit", "TRUE")]))
                .near_limit
        );
        assert!(
            !RateLimitSignal::from_headers(&headers(&[("x-ratelimit-nearlimit", "false")]))
                .near_limit
        );
        let low = headers(&[
            ("x-ratelimit-remaining", "19"),
            ("x-ratelimit-limit", "100"),
        ]);
        assert!(RateLimitSignal::from_headers(&low).near_limit);
        let plenty = headers(&[
            ("x-ratelimit-remaining", "80"),
            ("x-ratelimit-limit", "100"),
        ]);
        assert!(!RateLimitSignal::from_headers(&plenty).near_limit);
        let junk = headers(&[
            ("x-ratelimit-remaining", "lots"),
            ("x-ratelimit-reset", "later"),
        ]);
        assert_eq!(
            RateLimitSignal::from_headers(&junk),
            RateLimitSignal::default()
        );
        let reset = (chrono::Utc::now() + chrono::Duration::seconds(60)).to_rfc3339();
        let signal = RateLimitSignal::from_headers(&headers(&[("x-ratelimit-reset", &reset)]));
        assert!(signal.reset_in.is_some_and(|d| d > Duration::from_secs(50)));
    }

    #[tokio::test(start_paused = true)]
    async fn near_limit_spaces_requests_out_and_easing_off_ends_pacing() {
        let limiter = TenantLimiter::new(8);
        let near = RateLimitSignal {
            near_limit: true,
            ..Default::default()
        };
        limiter.observe(200, near, None);
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
            limiter.observe(200, RateLimitSignal::default(), None);
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
        let signal = RateLimitSignal {
            near_limit: true,
            remaining: Some(10),
            reset_in: Some(Duration::from_secs(5)),
        };
        limiter.observe(200, signal, None);
        assert_eq!(limiter.interval(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_answer_holds_back_every_request_of_the_tenant() {
        let limiter = TenantLimiter::new(8);
        let began = Instant::now();
        limiter.observe(
            429,
            RateLimitSignal::default(),
            Some(Duration::from_secs(3)),
        );
        drop(limiter.admit().await.expect("admitted"));
        assert!(Instant::now() - began >= Duration::from_secs(3));
    }

    #[test]
    fn one_limiter_per_tenant() {
        let limiters = Limiters::new(2);
        let a = limiters.for_tenant("a");
        assert!(Arc::ptr_eq(&a, &limiters.for_tenant("a")));
        assert!(!Arc::ptr_eq(&a, &limiters.for_tenant("b")));
    }
}
