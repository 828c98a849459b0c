//! Why a request was refused, mapped to its HTTP answer.
//!
//! Every refusal answers `{"error": "<code>"}` with a precise status. The code is stable: it is
//! what callers, logs and the `reason` label of `tributary_ingest_rejected_total` see.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tributary_common::connect::AuthError;
use tributary_common::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("the event is not one this app subscribes to")]
    UnknownEvent,
    #[error("no such route")]
    NotFound,
    #[error("the content type is not JSON")]
    UnsupportedContentType,
    #[error("the body is larger than the configured limit")]
    BodyTooLarge,
    #[error("the body did not arrive in time")]
    BodyTimeout,
    #[error("the body is not acceptable: {0}")]
    MalformedBody(String),
    #[error("the body's eventType does not match the route")]
    EventTypeMismatch,
    #[error("the body's key is not this app's key")]
    AppKeyMismatch,
    #[error("the tenant baseUrl host is not in the allowlist")]
    HostNotAllowed,
    #[error("the broker did not take the event: {0}")]
    BrokerUnavailable(String),
    #[error("the tenant store failed: {0}")]
    StoreUnavailable(String),
    #[error("too many requests in flight")]
    Overloaded,
}

impl Rejection {
    /// A failed store call: an outage (503) unless the database refused a value the
    /// request carried, which is the caller's fault (400) and must not feed the 5xx alert.
    pub fn from_store(err: StoreError) -> Rejection {
        if err.is_caused_by_input() {
            Rejection::MalformedBody(format!(
                "the body holds a value that cannot be stored: {err}"
            ))
        } else {
            Rejection::StoreUnavailable(err.to_string())
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Auth(err) => err.code(),
            Rejection::UnknownEvent => "unknown_event",
            Rejection::NotFound => "not_found",
            Rejection::UnsupportedContentType => "unsupported_content_type",
            Rejection::BodyTooLarge => "body_too_large",
            Rejection::BodyTimeout => "body_timeout",
            Rejection::MalformedBody(_) => "malformed_body",
            Rejection::EventTypeMismatch => "event_type_mismatch",
            Rejection::AppKeyMismatch => "app_key_mismatch",
            Rejection::HostNotAllowed => "host_not_allowed",
            Rejection::BrokerUnavailable(_) => "broker_unavailable",
            Rejection::StoreUnavailable(_) => "store_unavailable",
            Rejection::Overloaded => "overloaded",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            // A token that is not even a JWT is a malformed request, not a failed login.
            Rejection::Auth(AuthError::Malformed(_)) => StatusCode::BAD_REQUEST,
            Rejection::Auth(err) if err.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::Auth(_) => StatusCode::UNAUTHORIZED,
            Rejection::UnknownEvent | Rejection::NotFound => StatusCode::NOT_FOUND,
            Rejection::UnsupportedContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Rejection::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::MalformedBody(_)
            | Rejection::EventTypeMismatch
            | Rejection::AppKeyMismatch => StatusCode::BAD_REQUEST,
            Rejection::HostNotAllowed => StatusCode::FORBIDDEN,
            Rejection::BrokerUnavailable(_)
            | Rejection::StoreUnavailable(_)
            | Rejection::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Attached to refused responses so that the edge layer can count and log the refusal
/// where it knows the route.
#[derive(Debug, Clone)]
pub struct Refused {
    pub code: &'static str,
    pub detail: String,
}

impl Refused {
    /// The answer every source gives a refused request: `{"error": "<code>"}` with `status`,
    /// carrying the refusal for the edge layer.
    pub fn respond(status: StatusCode, code: &'static str, detail: String) -> Response {
        let mut response = (status, Json(serde_json::json!({ "error": code }))).into_response();
        response.extensions_mut().insert(Refused { code, detail });
        response
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut response = Refused::respond(self.status(), self.code(), self.to_string());
        if matches!(self, Rejection::BodyTimeout | Rejection::BodyTooLarge) {
            // The rest of a slow or oversize body is not worth reading, so the connection
            // cannot carry another request: say so, and no client reuses it.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_failures_map_to_their_status() {
        let cases = [
            (AuthError::MissingToken, StatusCode::UNAUTHORIZED),
            (AuthError::Malformed("x"), StatusCode::BAD_REQUEST),
            (AuthError::BadSignature, StatusCode::UNAUTHORIZED),
            (
                AuthError::KeyUnavailable("down".into()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                AuthError::StoreUnavailable("down".into()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ];
        for (err, status) in cases {
            assert_eq!(Rejection::Auth(err).status(), status);
        }
    }

    #[test]
    fn the_answer_carries_the_code_and_the_refusal() {
        let response = Rejection::BodyTooLarge.into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let refused = response
            .extensions()
            .get::<Refused>()
            .expect("refusal attached");
        assert_eq!(refused.code, "body_too_large");
    }
}
