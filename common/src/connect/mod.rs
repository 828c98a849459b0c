//! Atlassian Connect authentication: canonical requests, HS256 tokens, signed installs.

pub mod canonical;
pub mod error;
pub mod events;
pub mod install;
pub mod keys;
pub mod lifecycle;
pub mod token;

pub use canonical::{CanonicalForm, CanonicalRequest, accepted_qshes, qsh};
pub use error::AuthError;
pub use install::{InstallVerifier, VerifiedInstall};
pub use keys::{InstallKeyProvider, is_safe_key_id};
pub use lifecycle::{LifecycleEventType, LifecyclePayload};
pub use token::{
    OutboundToken, QshPolicy, RequestTarget, UnverifiedToken, VerifiedToken, extract_token,
};

/// A tenant's shared secret. It never prints: `Debug` shows a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSecret(String);

impl SharedSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        SharedSecret(secret.into())
    }

    /// The secret itself, for signing and encrypting only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret(<redacted>)")
    }
}
