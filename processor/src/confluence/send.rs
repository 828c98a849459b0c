//! Sending a request: sign it, wait for the tenant's turn, send, learn from the answer, and
//! retry what the policy allows.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tributary_common::connect::token::now_unix;
use tributary_common::connect::{OutboundToken, RequestTarget};

use super::answer;
use super::error::{ConfluenceError, excerpt};
use super::observe::{self, RetryReason, ThrottleReason};
use super::request::{ApiRequest, ApiResponse};
use super::retry::Retryable as Retry;
use super::signals::{QuotaScope, RateLimitSignals};
use super::user_token::GrantSubject;
use super::{APP_TOKEN_TTL_SECONDS, ConfluenceClient, Credentials, Identity};
use crate::backoff::RetryBudget;

/// Why one attempt did not produce a successful answer.
#[derive(Debug)]
enum Failure {
    Status {
        status: u16,
        retry_after: Option<Duration>,
        body: String,
    },
    Redirect(u16),
    Timeout,
    Connect(String),
    Transport(String),
    /// Not worth another attempt (signing, token grant).
    Fatal(ConfluenceError),
}

impl Failure {
    fn retry_reason(&self, idempotent: bool) -> Option<RetryReason> {
        let retryable = match self {
            Failure::Status { status, .. } => Retry::for_status(*status),
            Failure::Timeout => Retry::IfIdempotent(RetryReason::Timeout),
            // No connection, so nothing was sent: safe to repeat whatever the method.
            Failure::Connect(_) => Retry::Always(RetryReason::Connect),
            Failure::Redirect(_) | Failure::Transport(_) | Failure::Fatal(_) => Retry::Never,
        };
        retryable.reason(idempotent)
    }

    /// True when the request went out and what became of it is not known: Confluence may
    /// have acted on it and the answer was lost, late or an error raised after the work.
    fn leaves_outcome_unknown(&self) -> bool {
        match self {
            Failure::Timeout | Failure::Transport(_) => true,
            Failure::Status { status, .. } => matches!(status, 408 | 500 | 502 | 504),
            Failure::Redirect(_) | Failure::Connect(_) | Failure::Fatal(_) => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The error a caller sees. A request that is not idempotent and whose outcome is
    /// unknown becomes [`ConfluenceError::OutcomeUnknown`], which no one retries blindly.
    fn into_error(self, request: &ApiRequest, attempts: u32) -> ConfluenceError {
        let unknown = !request.idempotent && self.leaves_outcome_unknown();
        let error = self.into_plain_error(request, attempts);
        if !unknown {
            return error;
        }
        ConfluenceError::OutcomeUnknown {
            method: request.method().to_string(),
            path: request.path().to_string(),
            attempts,
            cause: Box::new(error),
        }
    }

    fn into_plain_error(self, request: &ApiRequest, attempts: u32) -> ConfluenceError {
        let method = request.method().to_string();
        let path = request.path().to_string();
        match self {
            Failure::Status {
                status,
                retry_after,
                body,
            } => ConfluenceError::Status {
                method,
                path,
                status,
                attempts,
                retry_after,
                body,
            },
            Failure::Redirect(status) => ConfluenceError::Redirected {
                method,
                path,
                status,
            },
            Failure::Timeout => ConfluenceError::Timeout {
                method,
                path,
                attempts,
            },
            Failure::Connect(message) => ConfluenceError::Connect {
                method,
                path,
                attempts,
                message,
            },
            Failure::Transport(message) => ConfluenceError::Transport {
                method,
                path,
                message,
            },
            Failure::Fatal(error) => error,
        }
    }
}

/// The `outcome` label of a finished request.
fn outcome_of(result: &Result<ApiResponse, ConfluenceError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(error) => match error {
            ConfluenceError::Throttled { .. } => "throttled",
            ConfluenceError::Status { status: 429, .. } => "rate_limited",
            ConfluenceError::Status { status: 503, .. } => "unavailable",
            ConfluenceError::Status {
                status: 500..=599, ..
            } => "server_error",
            ConfluenceError::Status { .. } => "client_error",
            ConfluenceError::Redirected { .. } => "redirected",
            ConfluenceError::Timeout { .. } => "timeout",
            ConfluenceError::Connect { .. } => "connect",
            ConfluenceError::Transport { .. } => "transport",
            ConfluenceError::OutcomeUnknown { .. } => "outcome_unknown",
            _ => "not_sent",
        },
    }
}

/// A transport error with its causes, which carry the useful part ("connection refused").
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn classify(error: reqwest::Error) -> Failure {
    let error = error.without_url();
    // A connect timeout is both; it is a connect failure, since nothing was sent.
    if error.is_connect() {
        Failure::Connect(describe(&error))
    } else if error.is_timeout() {
        Failure::Timeout
    } else {
        Failure::Transport(describe(&error))
    }
}

impl ConfluenceClient {
    /// Sends `request` with retries and returns a 2xx answer; any other final answer is an
    /// error carrying its status and the start of its body. The raw escape hatch: the typed
    /// and JSON helpers all go through here.
    ///
    /// Retries come out of the event's one budget (shared with the handler's own retries)
    /// and are waited for here only when short; a longer wait (a spent quota, a long
    /// `Retry-After`) returns the error at once, so the runtime parks the event instead of
    /// holding a worker. A pause in force for the tenant or the app is honoured before
    /// anything is sent.
    pub async fn send(&self, request: ApiRequest) -> Result<ApiResponse, ConfluenceError> {
        let (url, target) = self.site.locate(&request)?;
        let budget = match &self.budget {
            Some(budget) => budget.clone(),
            None => Arc::new(RetryBudget::new(self.shared.retry, 0, true)),
        };
        let hold_limit = self.shared.hold_limit;
        let may_hold = |wait: Duration| budget.may_wait_in_place() && wait <= hold_limit;
        let idempotent = request.idempotent;
        let mut attempts = 0;
        let result = loop {
            if let Some((wait, scope)) = self.shared.pauses.remaining(&self.site.client_key).await {
                if !may_hold(wait) {
                    budget.ask(wait);
                    break Err(ConfluenceError::Throttled {
                        method: request.method().to_string(),
                        path: request.path().to_string(),
                        wait,
                        scope: scope.as_str(),
                    });
                }
                observe::record_throttled(ThrottleReason::of_quota(scope), wait);
                tokio::time::sleep(wait).await;
            }
            attempts += 1;
            let failure = match self.attempt(&request, &url, &target).await {
                Ok(answer) => break Ok(answer),
                Err(failure) => failure,
            };
            let Some(reason) = failure.retry_reason(idempotent) else {
                break Err(failure.into_error(&request, attempts));
            };
            let asked = failure.retry_after();
            if let Some(wait) = asked {
                budget.ask(wait);
            }
            let delay = match budget.next_delay(asked) {
                Some(delay) if may_hold(delay) && budget.take() => delay,
                // Spent, or longer than a worker should wait: the caller decides.
                _ => break Err(failure.into_error(&request, attempts)),
            };
            observe::record_retry(reason);
            observe::record_throttled(ThrottleReason::Backoff, delay);
            tracing::debug!(
                method = %request.method(),
                path = request.path(),
                reason = reason.as_str(),
                wait_ms = delay.as_millis() as u64,
                "retrying Confluence request"
            );
            tokio::time::sleep(delay).await;
        };
        observe::record_outcome(outcome_of(&result));
        result
    }

    /// Sends `request` and reads the answer as JSON.
    pub async fn json<T: DeserializeOwned>(
        &self,
        request: ApiRequest,
    ) -> Result<T, ConfluenceError> {
        let method = request.method().to_string();
        let path = request.path().to_string();
        let answer = self.send(request).await?;
        answer.json().map_err(|e| ConfluenceError::Decode {
            method,
            path,
            message: e.to_string(),
        })
    }

    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ConfluenceError> {
        self.json(ApiRequest::get(path).query_pairs(query.iter().copied()))
            .await
    }

    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        body: &B,
    ) -> Result<T, ConfluenceError> {
        self.json(
            ApiRequest::post(path)
                .query_pairs(query.iter().copied())
                .json(body)?,
        )
        .await
    }

    pub async fn put_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        body: &B,
    ) -> Result<T, ConfluenceError> {
        self.json(
            ApiRequest::put(path)
                .query_pairs(query.iter().copied())
                .json(body)?,
        )
        .await
    }

    pub async fn delete(&self, path: &str, query: &[(&str, &str)]) -> Result<(), ConfluenceError> {
        self.send(ApiRequest::delete(path).query_pairs(query.iter().copied()))
            .await
            .map(drop)
    }

    async fn attempt(
        &self,
        request: &ApiRequest,
        url: &url::Url,
        target: &str,
    ) -> Result<ApiResponse, Failure> {
        // A user token may need a trip to the authorization server; that happens before
        // taking one of the tenant's slots.
        let bearer = match (&self.credentials, &self.identity) {
            (Credentials::Forge(forge), Identity::App) => {
                Some(forge.bearer().map_err(Failure::Fatal)?)
            }
            (Credentials::Forge(_), Identity::User(_)) => {
                return Err(Failure::Fatal(ConfluenceError::ForgeToken(
                    "acting as a user needs a user token, which Forge events do not carry".into(),
                )));
            }
            (Credentials::Connect(_), Identity::App) => None,
            (Credentials::Connect(_), Identity::User(key)) => {
                Some(self.user_token(key).await.map_err(Failure::Fatal)?)
            }
        };
        let _slot = self.limiter.admit().await.map_err(|_| {
            Failure::Fatal(ConfluenceError::Config(
                "tenant request limiter is closed".into(),
            ))
        })?;
        let mut authorization = match bearer {
            Some(token) => HeaderValue::from_str(&format!("Bearer {token}")),
            // Signed after waiting for the slot, so waiting does not eat into its lifetime.
            None => HeaderValue::from_str(&format!("JWT {}", self.app_token(request, target)?)),
        }
        .map_err(|_| {
            Failure::Fatal(ConfluenceError::Signing(
                "token is not a header value".into(),
            ))
        })?;
        authorization.set_sensitive(true);

        let mut headers = request.headers.clone();
        headers.remove(AUTHORIZATION);
        headers.insert(AUTHORIZATION, authorization);
        if !headers.contains_key(ACCEPT) {
            headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        }
        let mut outgoing = self
            .shared
            .http
            .request(request.method().clone(), url.clone());
        if let Some((content_type, body)) = &request.body {
            headers.insert(CONTENT_TYPE, content_type.clone());
            outgoing = outgoing.body(body.clone());
        }
        let started = Instant::now();
        let answer = match outgoing.headers(headers).send().await {
            Ok(answer) => answer,
            Err(error) => {
                observe::record_attempt(request.method(), None, started.elapsed());
                return Err(classify(error));
            }
        };
        let status = answer.status().as_u16();
        let headers = answer.headers().clone();
        let body = answer::read_capped(answer, answer::MAX_ANSWER_BYTES).await;
        observe::record_attempt(request.method(), Some(status), started.elapsed());
        let signals = RateLimitSignals::from_headers(&headers);
        self.limiter.observe(status, &signals);
        if status == 429 {
            observe::record_rate_limited(signals.scope());
        }
        let retry_after = match status {
            429 | 503 => signals.wait(),
            _ => None,
        };
        if let Some(wait) = retry_after {
            // A rate-limit answer speaks for the tenant's or the app's quota, not for this
            // request: every call it covers waits, in every replica.
            let scope = if status == 429 {
                signals.scope()
            } else {
                QuotaScope::Tenant
            };
            let reason = signals.reason.as_deref().unwrap_or(if status == 429 {
                "rate-limited"
            } else {
                "unavailable"
            });
            self.shared
                .pauses
                .pause(scope, &self.site.client_key, wait, reason)
                .await;
        }
        let body = body.map_err(|err| match err {
            answer::ReadError::Transport(err) => classify(err),
            answer::ReadError::TooLarge(max) => {
                Failure::Transport(format!("the answer is larger than {max} bytes"))
            }
        })?;
        match status {
            200..=299 => Ok(ApiResponse {
                status,
                headers,
                body,
            }),
            300..=399 => Err(Failure::Redirect(status)),
            _ => {
                if status == 401
                    && let Identity::User(key) = &self.identity
                {
                    self.shared.user_tokens.forget(key).await;
                }
                Err(Failure::Status {
                    status,
                    retry_after,
                    body: excerpt(&body),
                })
            }
        }
    }

    fn app_token(&self, request: &ApiRequest, target: &str) -> Result<String, Failure> {
        let Credentials::Connect(secret) = &self.credentials else {
            return Err(Failure::Fatal(ConfluenceError::Signing(
                "a Forge installation has no shared secret".into(),
            )));
        };
        OutboundToken {
            app_key: &self.shared.app_key,
            client_key: Some(&self.site.client_key),
            subject: None,
            request: RequestTarget {
                method: request.method().as_str(),
                target,
                base_path: &self.site.base_path,
            },
            issued_at: now_unix(),
            ttl_seconds: APP_TOKEN_TTL_SECONDS,
        }
        .sign(secret)
        .map_err(|e| Failure::Fatal(ConfluenceError::Signing(e.to_string())))
    }

    async fn user_token(&self, key: &super::TokenKey) -> Result<String, ConfluenceError> {
        let Credentials::Connect(secret) = &self.credentials else {
            return Err(ConfluenceError::NoOAuthClientId);
        };
        let oauth_client_id = self
            .site
            .oauth_client_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .ok_or(ConfluenceError::NoOAuthClientId)?;
        let token = self
            .shared
            .user_tokens
            .get(
                key,
                GrantSubject {
                    oauth_client_id,
                    base_url: &self.site.base_url,
                    secret,
                },
            )
            .await?;
        Ok(token.bearer().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error() -> Failure {
        Failure::Status {
            status: 500,
            retry_after: None,
            body: "boom".into(),
        }
    }

    #[test]
    fn a_write_whose_outcome_is_unknown_is_not_retried_and_says_so() {
        let post = ApiRequest::post("/rest/api/content");
        for failure in [
            Failure::Timeout,
            Failure::Transport("connection reset".into()),
            server_error(),
        ] {
            assert_eq!(failure.retry_reason(post.idempotent), None, "{failure:?}");
            let error = failure.into_error(&post, 1);
            match &error {
                ConfluenceError::OutcomeUnknown {
                    method,
                    path,
                    attempts,
                    cause,
                } => {
                    assert_eq!(
                        (method.as_str(), path.as_str(), *attempts),
                        ("POST", "/rest/api/content", 1)
                    );
                    assert!(cause.is_transient(), "{cause:?}");
                }
                other => panic!("expected OutcomeUnknown, got {other:?}"),
            }
            assert!(!error.is_transient());
        }
    }

    #[test]
    fn the_same_failures_of_an_idempotent_request_stay_plain_errors() {
        let get = ApiRequest::get("/api/v2/pages/1");
        assert_eq!(
            Failure::Timeout.retry_reason(get.idempotent),
            Some(RetryReason::Timeout)
        );
        assert!(matches!(
            Failure::Timeout.into_error(&get, 4),
            ConfluenceError::Timeout { attempts: 4, .. }
        ));
        assert!(matches!(
            server_error().into_error(&get, 4),
            ConfluenceError::Status { status: 500, .. }
        ));
        let labelled = ApiRequest::post("/rest/api/content/1/label").idempotent(true);
        assert!(matches!(
            server_error().into_error(&labelled, 2),
            ConfluenceError::Status { status: 500, .. }
        ));
    }

    #[test]
    fn refused_connections_and_unprocessed_answers_are_retried_for_every_method() {
        let post = ApiRequest::post("/api/v2/footer-comments");
        assert_eq!(
            Failure::Connect("connection refused".into()).retry_reason(post.idempotent),
            Some(RetryReason::Connect)
        );
        assert!(matches!(
            Failure::Connect("connection refused".into()).into_error(&post, 4),
            ConfluenceError::Connect { attempts: 4, .. }
        ));
        for status in [429, 503] {
            let failure = Failure::Status {
                status,
                retry_after: None,
                body: String::new(),
            };
            assert!(failure.retry_reason(post.idempotent).is_some());
            assert!(matches!(
                failure.into_error(&post, 4),
                ConfluenceError::Status { .. }
            ));
        }
        let not_found = Failure::Status {
            status: 404,
            retry_after: None,
            body: String::new(),
        };
        assert!(matches!(
            not_found.into_error(&post, 1),
            ConfluenceError::Status { status: 404, .. }
        ));
    }
}
