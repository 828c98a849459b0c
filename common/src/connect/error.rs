//! Why a Connect request was refused, with a short stable code per reason.

use thiserror::Error;

/// Every way an inbound Connect token can be refused. `code()` is the stable, machine-readable
/// reason that goes into HTTP answers, logs and metric labels.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("no token in the Authorization header or the jwt query parameter")]
    MissingToken,
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(&'static str),
    #[error("token algorithm `{0}` is not accepted here")]
    UnsupportedAlgorithm(String),
    #[error("no installed tenant has this issuer")]
    UnknownIssuer,
    #[error("the tenant is uninstalled")]
    TenantUninstalled,
    #[error("the token signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token was issued in the future")]
    IssuedInFuture,
    #[error("the token carries no qsh claim")]
    MissingQsh,
    #[error("the token's qsh does not match this request")]
    QshMismatch,
    #[error("a context token (context-qsh) is not accepted here")]
    ContextQshNotAllowed,
    #[error("the signed-install key id is not a safe path segment")]
    InvalidKeyId,
    #[error("no key server knows this key id")]
    UnknownKeyId,
    #[error("the install key could not be fetched: {0}")]
    KeyUnavailable(String),
    #[error("the token audience is not this app")]
    WrongAudience,
    #[error("the token issuer does not match the body's clientKey")]
    IssuerMismatch,
    #[error("the tenant store could not be read: {0}")]
    StoreUnavailable(String),
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::Malformed(_) => "malformed",
            AuthError::UnsupportedAlgorithm(_) => "unsupported_alg",
            AuthError::UnknownIssuer => "unknown_issuer",
            AuthError::TenantUninstalled => "tenant_uninstalled",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::IssuedInFuture => "issued_in_future",
            AuthError::MissingQsh => "missing_qsh",
            AuthError::QshMismatch => "qsh_mismatch",
            AuthError::ContextQshNotAllowed => "context_qsh_not_allowed",
            AuthError::InvalidKeyId => "invalid_kid",
            AuthError::UnknownKeyId => "unknown_kid",
            AuthError::KeyUnavailable(_) => "key_unavailable",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::IssuerMismatch => "issuer_mismatch",
            AuthError::StoreUnavailable(_) => "store_unavailable",
        }
    }

    /// True when the caller did nothing wrong and a later retry may succeed (answer 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            AuthError::KeyUnavailable(_) | AuthError::StoreUnavailable(_)
        )
    }
}
