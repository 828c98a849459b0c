//! Why a Confluence call failed, and whether trying again later may help.

use std::time::Duration;

/// How much of an error answer's body an error keeps (enough to read Confluence's message).
pub(crate) const BODY_EXCERPT_BYTES: usize = 512;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfluenceError {
    /// The tenant's base URL is not an http(s) URL with a host, or its host is not allowed.
    #[error("tenant base URL is refused: {0}")]
    HostNotAllowed(String),
    /// A path or URL given to the client could not be turned into a request to the tenant.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Acting as a user needs the tenant's OAuth client id (the ACT_AS_USER scope).
    #[error("the tenant has no oauthClientId, so the app cannot act as a user")]
    NoOAuthClientId,
    /// The configuration cannot make a client (bad URL, TLS set-up).
    #[error("client configuration: {0}")]
    Config(String),
    #[error("could not sign the request token: {0}")]
    Signing(String),
    /// A Forge installation has no usable app system token (none was delivered, or the
    /// one stored has expired); the next Forge delivery brings a fresh one.
    #[error("Forge app system token: {0}")]
    ForgeToken(String),
    /// The authorization server refused or failed the user-token grant.
    #[error("user token grant failed{}: {message}", status.map(|s| format!(" with {s}")).unwrap_or_default())]
    TokenGrant {
        status: Option<u16>,
        message: String,
    },
    /// Confluence answered with a redirect; the client does not follow them to other hosts
    /// and does not re-sign for new paths.
    #[error("{method} {path} was redirected (status {status}); redirects are not followed")]
    Redirected {
        method: String,
        path: String,
        status: u16,
    },
    /// Confluence answered with an error status (after any retries).
    #[error("{method} {path} answered {status} after {attempts} attempt(s): {body}")]
    Status {
        method: String,
        path: String,
        status: u16,
        attempts: u32,
        /// Suggested wait from `Retry-After`, when the last answer carried one.
        retry_after: Option<Duration>,
        /// The start of the answer body.
        body: String,
    },
    /// Not sent: the tenant's or the app's quota is spent (a pause every replica honours)
    /// for longer than a call waits where it is. The event is retried once it is over.
    #[error("{method} {path} not sent: the {scope} quota is spent for another {}s", wait.as_secs())]
    Throttled {
        method: String,
        path: String,
        wait: Duration,
        /// `tenant` or `app`.
        scope: &'static str,
    },
    #[error("{method} {path} timed out after {attempts} attempt(s)")]
    Timeout {
        method: String,
        path: String,
        attempts: u32,
    },
    #[error("{method} {path} could not reach Confluence after {attempts} attempt(s): {message}")]
    Connect {
        method: String,
        path: String,
        attempts: u32,
        message: String,
    },
    /// Any other transport failure (a broken answer stream, for example).
    #[error("{method} {path} failed: {message}")]
    Transport {
        method: String,
        path: String,
        message: String,
    },
    /// A request that is not idempotent was sent and then failed in a way that does not
    /// say whether Confluence acted on it (a timeout, a broken connection or answer, or
    /// 408/500/502/504). It was not repeated, since repeating it could make a second
    /// comment or page. Not transient: retrying the event would repeat the write blindly,
    /// so a handler that passes it on dead-letters the event, where an operator can check
    /// the site and replay it. `cause` is the error it would otherwise have been.
    #[error("{method} {path}: outcome unknown after {attempts} attempt(s), not repeated: {cause}")]
    OutcomeUnknown {
        method: String,
        path: String,
        attempts: u32,
        cause: Box<ConfluenceError>,
    },
    /// The answer was not the JSON the caller expected.
    #[error("{method} {path}: answer is not the expected JSON: {message}")]
    Decode {
        method: String,
        path: String,
        message: String,
    },
}

impl ConfluenceError {
    /// True when the same call may succeed later (a handler should retry the event rather
    /// than dead-letter it): rate limits, unavailability, server errors, timeouts, network.
    /// Never for [`ConfluenceError::OutcomeUnknown`], whose write may already have happened.
    pub fn is_transient(&self) -> bool {
        match self {
            ConfluenceError::Status { status, .. } => is_transient_status(*status),
            ConfluenceError::Timeout { .. }
            | ConfluenceError::Throttled { .. }
            | ConfluenceError::Connect { .. }
            | ConfluenceError::Transport { .. } => true,
            ConfluenceError::TokenGrant { status, .. } => status.is_none_or(is_transient_status),
            ConfluenceError::OutcomeUnknown { .. }
            | ConfluenceError::HostNotAllowed(_)
            | ConfluenceError::InvalidRequest(_)
            | ConfluenceError::NoOAuthClientId
            | ConfluenceError::Config(_)
            | ConfluenceError::Signing(_)
            | ConfluenceError::ForgeToken(_)
            | ConfluenceError::Redirected { .. }
            | ConfluenceError::Decode { .. } => false,
        }
    }

    /// The HTTP status of the last answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ConfluenceError::Status { status, .. } | ConfluenceError::Redirected { status, .. } => {
                Some(*status)
            }
            ConfluenceError::TokenGrant { status, .. } => *status,
            ConfluenceError::OutcomeUnknown { cause, .. } => cause.status(),
            _ => None,
        }
    }
}

/// Statuses Atlassian advises retrying.
pub(crate) fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// The first [`BODY_EXCERPT_BYTES`] of a body as text, cut on a character boundary.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if text.len() <= BODY_EXCERPT_BYTES {
        return text.into_owned();
    }
    let mut end = BODY_EXCERPT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_cuts_long_bodies_on_a_character_boundary() {
        let body = "é".repeat(BODY_EXCERPT_BYTES);
        let cut = excerpt(body.as_bytes());
        assert!(cut.ends_with("..."));
        assert!(cut.len() <= BODY_EXCERPT_BYTES + 3);
        assert_eq!(excerpt(b"short"), "short");
    }

    #[test]
    fn transient_classification_follows_atlassian_advice() {
        let status = |status| ConfluenceError::Status {
            method: "GET".into(),
            path: "/x".into(),
            status,
            attempts: 4,
            retry_after: None,
            body: String::new(),
        };
        assert!(status(429).is_transient());
        assert!(status(503).is_transient());
        assert!(!status(404).is_transient());
        assert!(!status(400).is_transient());
        assert!(!ConfluenceError::HostNotAllowed("evil.example".into()).is_transient());
        let unknown = ConfluenceError::OutcomeUnknown {
            method: "POST".into(),
            path: "/rest/api/content".into(),
            attempts: 1,
            cause: Box::new(status(500)),
        };
        assert!(
            !unknown.is_transient(),
            "a write that may have happened is not repeated blindly"
        );
        assert_eq!(unknown.status(), Some(500));
    }
}
