//! Refusals of Forge deliveries: the edge's own, plus every invocation-token failure with
//! its stable code, answered like the Connect routes answer (`{"error": "<code>"}`, counted
//! and logged by the edge).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tributary_common::forge::ForgeAuthError;

use crate::rejection::{Refused, Rejection};

#[derive(Debug, thiserror::Error)]
pub enum ForgeRefusal {
    #[error(transparent)]
    Token(#[from] ForgeAuthError),
    #[error(transparent)]
    Edge(#[from] Rejection),
    /// The delivery's deadline passed before it was published.
    #[error("the delivery was not published within its deadline of {0:?}")]
    DeadlineExceeded(std::time::Duration),
}

impl ForgeRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            ForgeRefusal::Token(err) => err.code(),
            ForgeRefusal::Edge(err) => err.code(),
            ForgeRefusal::DeadlineExceeded(_) => "deadline_exceeded",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ForgeRefusal::Token(ForgeAuthError::Malformed(_)) => StatusCode::BAD_REQUEST,
            // Forge retries a 5xx: right when the key host failed, not the token.
            ForgeRefusal::Token(err) if err.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            ForgeRefusal::Token(_) => StatusCode::UNAUTHORIZED,
            ForgeRefusal::Edge(err) => err.status(),
            // Forge retries a 5xx, and the retry keeps the event id.
            ForgeRefusal::DeadlineExceeded(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ForgeRefusal {
    fn into_response(self) -> Response {
        if let ForgeRefusal::Edge(err) = self {
            return err.into_response();
        }
        Refused::respond(self.status(), self.code(), self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_failures_map_to_their_status() {
        let cases = [
            (ForgeAuthError::MissingToken, StatusCode::UNAUTHORIZED),
            (ForgeAuthError::Malformed("x"), StatusCode::BAD_REQUEST),
            (ForgeAuthError::WrongAudience, StatusCode::UNAUTHORIZED),
            (
                ForgeAuthError::KeyUnavailable("down".into()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ];
        for (err, status) in cases {
            let response = ForgeRefusal::Token(err.clone()).into_response();
            assert_eq!(response.status(), status);
            assert_eq!(
                response.extensions().get::<Refused>().map(|r| r.code),
                Some(err.code())
            );
        }
        assert_eq!(
            ForgeRefusal::Edge(Rejection::BodyTooLarge).status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let late =
            ForgeRefusal::DeadlineExceeded(std::time::Duration::from_secs(4)).into_response();
        assert_eq!(late.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            late.extensions().get::<Refused>().map(|r| r.code),
            Some("deadline_exceeded")
        );
    }
}
