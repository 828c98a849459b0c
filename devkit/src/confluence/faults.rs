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
    /// Do what the request asks, then answer this instead (an error raised after the work
    /// was done, so the client cannot tell that it was).
    AnswerAfterWork(Scripted),
    /// Do what the request asks, then hold the answer this long: past the client's
    /// timeout, the client never learns that it was done.
    AnswerLate(Duration),
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

    /// `status` (500, 502, 504...) answered after the request was carried out.
    pub fn failed_after_work(status: u16) -> Fault {
        Fault::AnswerAfterWork(Scripted::confluence_error(status, None))
    }

    /// The request carried out, its answer held for `delay`.
    pub fn answered_late(delay: Duration) -> Fault {
        Fault::AnswerLate(delay)
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

#[derive(Debug)]
struct Planned {
    fault: Fault,
    remaining: Remaining,
    /// Only requests with this method meet the fault; others are answered as usual and
    /// leave it waiting.
    method: Option<String>,
}

/// Faults in the order they were planned; the first one not used up applies.
#[derive(Debug, Default)]
pub(super) struct FaultPlan {
    planned: VecDeque<Planned>,
}

impl FaultPlan {
    pub fn push(&mut self, fault: Fault, span: FaultSpan) {
        self.push_for(None, fault, span);
    }

    /// Plans a fault that only requests with `method` meet.
    pub fn push_for(&mut self, method: Option<&str>, fault: Fault, span: FaultSpan) {
        let remaining = match span {
            FaultSpan::Requests(n) => Remaining::Requests(n),
            FaultSpan::For(duration) => Remaining::NotStarted(duration),
        };
        self.planned.push_back(Planned {
            fault,
            remaining,
            method: method.map(str::to_ascii_uppercase),
        });
    }

    pub fn clear(&mut self) {
        self.planned.clear();
    }

    /// The fault the next request gets, if any, using it up.
    #[cfg(test)]
    pub fn next(&mut self) -> Option<Fault> {
        self.next_for("GET")
    }

    /// The fault the next request, made with `method`, gets, if any, using it up.
    pub fn next_for(&mut self, method: &str) -> Option<Fault> {
        let now = Instant::now();
        while let Some(Planned {
            fault,
            remaining,
            method: only,
        }) = self.planned.front_mut()
        {
            let used_up = match remaining {
                Remaining::Requests(0) => true,
                Remaining::Until(until) => now >= *until,
                Remaining::Requests(_) | Remaining::NotStarted(_) => false,
            };
            if used_up {
                self.planned.pop_front();
                continue;
            }
            if only.as_deref().is_some_and(|only| only != method) {
                return None;
            }
            match remaining {
                Remaining::Requests(n) => *n -= 1,
                Remaining::NotStarted(duration) => *remaining = Remaining::Until(now + *duration),
                Remaining::Until(_) => {}
            }
            return Some(fault.clone());
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

    #[test]
    fn a_fault_for_one_method_waits_for_a_request_with_it() {
        let mut plan = FaultPlan::default();
        plan.push_for(
            Some("post"),
            Fault::answered_late(Duration::from_secs(5)),
            FaultSpan::Requests(1),
        );
        plan.push(Fault::unavailable(None), FaultSpan::Requests(1));
        assert_eq!(plan.next_for("GET"), None, "a GET passes the POST's fault");
        assert_eq!(
            plan.next_for("POST"),
            Some(Fault::answered_late(Duration::from_secs(5)))
        );
        assert_eq!(plan.next_for("GET"), Some(Fault::unavailable(None)));
        assert_eq!(plan.next_for("POST"), None);
    }
}
