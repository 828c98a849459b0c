//! What an answer says about the app's rate limits, read from every header Atlassian uses.
//!
//! None of these headers is guaranteed and their formats vary (Atlassian documents some,
//! others are seen in the wild), so each is read leniently: a missing or unreadable header
//! is simply not a signal.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Below this share of the quota left, requests are paced (Atlassian's NearLimit mark).
const LOW_REMAINING_RATIO: f64 = 0.2;
/// With no known limit, this few requests left counts as low.
const LOW_REMAINING_ABSOLUTE: u64 = 5;
/// A bare number in `X-RateLimit-Reset` above this is a Unix time, below it a delay.
const UNIX_TIME_FROM: u64 = 1_000_000_000;

/// Whose quota an answer says is spent (`RateLimit-Reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaScope {
    /// The tenant's own budget (`confluence-quota-tenant-based`) or a limit of one site: the
    /// app's calls to that tenant wait.
    Tenant,
    /// The app's budget over every tenant (`confluence-quota-global-based`): all of the
    /// app's calls wait.
    App,
}

impl QuotaScope {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaScope::Tenant => "tenant",
            QuotaScope::App => "app",
        }
    }
}

/// The rate-limit headers of one answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimitSignals {
    /// The longest of `Retry-After` and `Beta-Retry-After`.
    pub retry_after: Option<Duration>,
    pub remaining: Option<u64>,
    pub limit: Option<u64>,
    /// Time until the quota resets.
    pub reset_in: Option<Duration>,
    /// `X-RateLimit-NearLimit: true`, or little left of a known limit.
    pub near_limit: bool,
    /// `RateLimit-Reason` as sent, when there was one.
    pub reason: Option<String>,
}

impl RateLimitSignals {
    pub fn from_headers(headers: &HeaderMap) -> RateLimitSignals {
        Self::read(headers, Utc::now())
    }

    fn read(headers: &HeaderMap, now: DateTime<Utc>) -> RateLimitSignals {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let number = |name: &str| text(name).and_then(|v| v.parse::<u64>().ok());

        let retry_after = [
            text(RETRY_AFTER.as_str()),
            text("beta-retry-after"),
            text("x-retry-after"),
        ]
        .into_iter()
        .flatten()
        .filter_map(|value| wait_from(value, now))
        .max();

        // The structured header (`"global-app-quota";r=0;t=30`) fills what the X- ones lack.
        let structured = text("ratelimit")
            .or_else(|| text("beta-ratelimit"))
            .map(structured_limit)
            .unwrap_or_default();
        let remaining = number("x-ratelimit-remaining").or(structured.0);
        let limit = number("x-ratelimit-limit").filter(|l| *l > 0);
        let reset_in = text("x-ratelimit-reset")
            .and_then(|v| reset_from(v, now))
            .or(structured.1);
        let flagged = text("x-ratelimit-nearlimit").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let low = match (remaining, limit) {
            (Some(left), Some(limit)) => (left as f64) < (limit as f64) * LOW_REMAINING_RATIO,
            (Some(left), None) => left <= LOW_REMAINING_ABSOLUTE,
            _ => false,
        };
        RateLimitSignals {
            retry_after,
            remaining,
            limit,
            reset_in,
            near_limit: flagged || low,
            reason: text("ratelimit-reason").map(str::to_string),
        }
    }

    /// Whose calls a rate-limit answer with these headers should hold back.
    pub fn scope(&self) -> QuotaScope {
        match self.reason.as_deref() {
            Some(reason) if reason.to_ascii_lowercase().contains("global") => QuotaScope::App,
            _ => QuotaScope::Tenant,
        }
    }

    /// How long the other side asked the app to wait before its next call: `Retry-After`
    /// when given, otherwise the reset time of a spent quota.
    pub fn wait(&self) -> Option<Duration> {
        self.retry_after.or(match self.remaining {
            Some(0) => self.reset_in,
            _ => None,
        })
    }
}

/// `Retry-After`'s two forms: a number of seconds (fractions accepted, any size) or an HTTP
/// date.
fn wait_from(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::try_from_secs_f64(seconds).ok())
            .flatten();
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some(until(at, now))
}

/// `X-RateLimit-Reset` in the forms Atlassian sends: ISO 8601 with seconds
/// (`2026-03-02T10:15:30Z`, fractions and offsets allowed) or without them
/// (`2026-03-02T10:15Z`), and, leniently, a Unix time or a number of seconds.
fn reset_from(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Some(until(at.with_timezone(&Utc), now));
    }
    for format in ["%Y-%m-%dT%H:%M%#z", "%Y-%m-%dT%H:%M:%S%#z"] {
        if let Ok(at) = DateTime::parse_from_str(value, format) {
            return Some(until(at.with_timezone(&Utc), now));
        }
    }
    if let Some(naive) = value.strip_suffix('Z') {
        for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S%.f"] {
            if let Ok(at) = NaiveDateTime::parse_from_str(naive, format) {
                return Some(until(at.and_utc(), now));
            }
        }
    }
    let number = value.parse::<u64>().ok()?;
    if number >= UNIX_TIME_FROM {
        let at = DateTime::from_timestamp(i64::try_from(number).ok()?, 0)?;
        return Some(until(at, now));
    }
    Some(Duration::from_secs(number))
}

/// `r` (remaining) and `t` (seconds to reset) of a structured `RateLimit` header.
fn structured_limit(value: &str) -> (Option<u64>, Option<Duration>) {
    let mut remaining = None;
    let mut reset = None;
    for parameter in value.split(';').map(str::trim) {
        if let Some(r) = parameter.strip_prefix("r=") {
            remaining = r.trim().parse().ok();
        } else if let Some(t) = parameter.strip_prefix("t=") {
            reset = t.trim().parse().ok().map(Duration::from_secs);
        }
    }
    (remaining, reset)
}

fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or(Duration::ZERO)
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

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-02T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    fn read(pairs: &[(&'static str, &str)]) -> RateLimitSignals {
        RateLimitSignals::read(&headers(pairs), now())
    }

    #[test]
    fn retry_after_of_any_size_in_seconds_or_as_a_date() {
        assert_eq!(read(&[]).retry_after, None);
        assert_eq!(
            read(&[("retry-after", "300")]).retry_after,
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            read(&[("retry-after", "86400")]).retry_after,
            Some(Duration::from_secs(86400))
        );
        assert_eq!(
            read(&[("retry-after", " 1.5 ")]).retry_after,
            Some(Duration::from_millis(1500))
        );
        assert_eq!(read(&[("retry-after", "-3")]).retry_after, None);
        assert_eq!(read(&[("retry-after", "soon")]).retry_after, None);
        assert_eq!(
            read(&[("retry-after", "Mon, 02 Mar 2026 10:02:00 GMT")]).retry_after,
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            read(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]).retry_after,
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn beta_retry_after_counts_and_the_longer_wait_wins() {
        assert_eq!(
            read(&[("beta-retry-after", "90")]).retry_after,
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            read(&[("retry-after", "10"), ("beta-retry-after", "90")]).retry_after,
            Some(Duration::from_secs(90))
        );
    }

    #[test]
    fn reset_in_every_format_atlassian_uses() {
        let reset = |value: &str| read(&[("x-ratelimit-reset", value)]).reset_in;
        // ISO 8601 with seconds, with fractions, with an offset.
        assert_eq!(reset("2026-03-02T10:00:30Z"), Some(Duration::from_secs(30)));
        assert_eq!(
            reset("2026-03-02T10:00:30.500Z"),
            Some(Duration::from_millis(30_500))
        );
        assert_eq!(
            reset("2026-03-02T11:01:00+01:00"),
            Some(Duration::from_secs(60))
        );
        // Atlassian's yyyy-MM-ddTHH:mmZ, without seconds.
        assert_eq!(reset("2026-03-02T10:05Z"), Some(Duration::from_secs(300)));
        assert_eq!(
            reset("2026-03-02T11:05+01:00"),
            Some(Duration::from_secs(300))
        );
        // Numbers: a Unix time, or seconds from now.
        let unix = (now().timestamp() + 45).to_string();
        assert_eq!(reset(&unix), Some(Duration::from_secs(45)));
        assert_eq!(reset("20"), Some(Duration::from_secs(20)));
        // A reset in the past is now; junk is nothing.
        assert_eq!(reset("2026-03-02T09:00Z"), Some(Duration::ZERO));
        assert_eq!(reset("later"), None);
    }

    #[test]
    fn near_limit_is_flagged_or_inferred_from_what_is_left() {
        assert!(read(&[("x-ratelimit-nearlimit", "TRUE")]).near_limit);
        assert!(!read(&[("x-ratelimit-nearlimit", "false")]).near_limit);
        assert!(
            read(&[
                ("x-ratelimit-remaining", "19"),
                ("x-ratelimit-limit", "100")
            ])
            .near_limit
        );
        assert!(
            !read(&[
                ("x-ratelimit-remaining", "80"),
                ("x-ratelimit-limit", "100")
            ])
            .near_limit
        );
        assert!(read(&[("x-ratelimit-remaining", "3")]).near_limit);
        assert_eq!(
            read(&[("x-ratelimit-remaining", "lots")]),
            RateLimitSignals::default()
        );
    }

    #[test]
    fn the_reason_names_whose_quota_is_spent() {
        let tenant = read(&[("ratelimit-reason", "confluence-quota-tenant-based")]);
        assert_eq!(tenant.scope(), QuotaScope::Tenant);
        assert_eq!(
            tenant.reason.as_deref(),
            Some("confluence-quota-tenant-based")
        );
        let global = read(&[("ratelimit-reason", "confluence-quota-global-based")]);
        assert_eq!(global.scope(), QuotaScope::App);
        assert_eq!(read(&[]).scope(), QuotaScope::Tenant);
    }

    #[test]
    fn a_spent_quota_waits_for_its_reset_and_the_structured_header_fills_gaps() {
        let spent = read(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "2026-03-02T10:01Z"),
        ]);
        assert_eq!(spent.wait(), Some(Duration::from_secs(60)));
        let structured = read(&[("ratelimit", "\"global-app-quota\";r=0;t=30")]);
        assert_eq!(structured.remaining, Some(0));
        assert_eq!(structured.wait(), Some(Duration::from_secs(30)));
        let both = read(&[
            ("retry-after", "5"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "2026-03-02T10:01Z"),
        ]);
        assert_eq!(both.wait(), Some(Duration::from_secs(5)));
    }
}
