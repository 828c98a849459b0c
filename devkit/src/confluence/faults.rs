//! Planned misbehaviour: what the next requests get instead of the usual answer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::http::StatusCode;

/// A canned answer: a status, headers and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Scripted {
    pub fn status(status: u16) -> Scripted {
        Scripted {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Scripted {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<String>) -> Scripted {
        self.body = body.into();
        self
    }

    pub fn json(status: u16, body: serde_json::Value) -> Scripted {
        Scripted::status(status)
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    /// An error as Confluence answers it, with `Retry-After: seconds` when given.
    pub fn confluence_error(status: u16, retry_after: Option<u64>) -> Scripted {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let answer = Scripted::json(
            status,
            super::error_body(code, code.canonical_reason().unwrap_or("unavailable")),
        );
        match retry_after {
            Some(seconds) => answer.header("retry-after", &seconds.to_string()),
            None => answer,
        }
    }
}

/// One way of misbehaving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this instead.
    Answer(Scripted),
    /// Hold the request without answering until the client gives up.
    Hang,
}

impl Fault {
    /// 429 with `Retry-After`, as Confluence rate-limits a tenant's burst.
    pub fn rate_limited(retry_after_seconds: u64) -> Fault {
        Fault::Answer(
            Scripted::confluence_error(429, Some(retry_after_seconds))
                .header("ratelimit-reason", "tenant-burst"),
        )
    }

    /// 503, with `Retry-After` when given.
    pub fn unavailable(retry_after_seconds: Option<u64>) -> Fault {
        Fault::Answer(Scripted::confluence_error(503, retry_after_seconds))
    }
}

/// How long a fault lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultSpan {
    /// The next `n` authenticated requests.
    Requests(usize),
    /// Every authenticated request for this long, counted from when the fault starts.
    For(Duration),
}

#[derive(Debug)]
enum Remaining {
    Requests(usize),
    Until(Instant),
    /// A duration that starts with the first request it applies to.
    NotStarted(Duration),
}

/// Faults in the order they were planned; the first one not used up applies.
#[derive(Debug, Default)]
pub(super) struct FaultPlan {
    planned: VecDeque<(Fault, Remaining)>,
}

impl FaultPlan {
    pub fn push(&mut self, fault: Fault, span: FaultSpan) {
        let remaining = match span {
            FaultSpan::Requests(n) => Remaining::Requests(n),
            FaultSpan::For(duration) => Remaining::NotStarted(duration),
        };
        self.planned.push_back((fault, remaining));
    }

    pub fn clear(&mut self) {
        self.planned.clear();
    }

    /// The fault the next request gets, if any, using it up.
    pub fn next(&mut self) -> Option<Fault> {
        let now = Instant::now();
        while let Some((fault, remaining)) = self.planned.front_mut() {
            match remaining {
                Remaining::Requests(0) => {}
                Remaining::Requests(n) => {
                    *n -= 1;
                    return Some(fault.clone());
                }
                Remaining::NotStarted(duration) => {
                    *remaining = Remaining::Until(now + *duration);
                    return Some(fault.clone());
                }
                Remaining::Until(until) if now < *until => return Some(fault.clone()),
                Remaining::Until(_) => {}
            }
            self.planned.pop_front();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_faults_run_out_in_order() {
        let mut plan = FaultPlan::default();
        plan.push(Fault::rate_limited(1), FaultSpan::Requests(2));
        plan.push(Fault::unavailable(None), FaultSpan::Requests(1));
        assert_eq!(plan.next(), Some(Fault::rate_limited(1)));
        assert_eq!(plan.next(), Some(Fault::rate_limited(1)));
        assert_eq!(plan.next(), Some(Fault::unavailable(None)));
        assert_eq!(plan.next(), None);
    }

    #[test]
    fn a_timed_fault_starts_with_its_first_request_and_ends() {
        let mut plan = FaultPlan::default();
        plan.push(Fault::Hang, FaultSpan::For(Duration::ZERO));
        plan.push(Fault::unavailable(Some(2)), FaultSpan::Requests(1));
        // A zero-length span still answers the request that starts it.
        assert_eq!(plan.next(), Some(Fault::Hang));
        assert_eq!(plan.next(), Some(Fault::unavailable(Some(2))));
        assert_eq!(plan.next(), None);
        plan.push(Fault::Hang, FaultSpan::For(Duration::from_secs(3600)));
        assert_eq!(plan.next(), Some(Fault::Hang));
        assert_eq!(plan.next(), Some(Fault::Hang));
        plan.clear();
        assert_eq!(plan.next(), None);
    }
}
