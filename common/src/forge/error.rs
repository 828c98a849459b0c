//! Why a Forge invocation was refused, with a short stable code per reason.

use thiserror::Error;

/// Every way a Forge Invocation Token can be refused. `code()` is the stable reason that
/// goes into HTTP answers, logs and metric labels.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ForgeAuthError {
    #[error("no bearer token in the Authorization header")]
    MissingToken,
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(&'static str),
    #[error("token algorithm `{0}` is not accepted (RS256 only)")]
    UnsupportedAlgorithm(String),
    #[error("the token header has no usable kid")]
    InvalidKeyId,
    #[error("the JWKS has no key with this kid")]
    UnknownKeyId,
    #[error("the JWKS could not be fetched: {0}")]
    KeyUnavailable(String),
    #[error("the token signature does not verify")]
    BadSignature,
    #[error("the token issuer is not forge/invocation-token")]
    WrongIssuer,
    #[error("the token audience is not this app")]
    WrongAudience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token lacks the claim `{0}`")]
    MissingClaim(&'static str),
    #[error("the token's apiBaseUrl is not on the Forge API host allowlist")]
    ApiHostNotAllowed,
}

impl ForgeAuthError {
    pub fn code(&self) -> &'static str {
        match self {
            ForgeAuthError::MissingToken => "missing_token",
            ForgeAuthError::Malformed(_) => "malformed",
            ForgeAuthError::UnsupportedAlgorithm(_) => "unsupported_alg",
            ForgeAuthError::InvalidKeyId => "invalid_kid",
            ForgeAuthError::UnknownKeyId => "unknown_kid",
            ForgeAuthError::KeyUnavailable(_) => "key_unavailable",
            ForgeAuthError::BadSignature => "bad_signature",
            ForgeAuthError::WrongIssuer => "wrong_issuer",
            ForgeAuthError::WrongAudience => "wrong_audience",
            ForgeAuthError::Expired => "expired",
            ForgeAuthError::NotYetValid => "not_yet_valid",
            ForgeAuthError::MissingClaim(_) => "missing_claim",
            ForgeAuthError::ApiHostNotAllowed => "api_host_not_allowed",
        }
    }

    /// True when the caller did nothing wrong and a later retry may succeed (answer 503,
    /// which Forge retries).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ForgeAuthError::KeyUnavailable(_))
    }
}
