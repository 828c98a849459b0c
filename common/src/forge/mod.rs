//! Forge Remote: verifying the Forge Invocation Token (FIT) a Forge delivery carries, the
//! JWKS its keys come from, and the Forge event names with their Connect counterparts.

pub mod error;
pub mod events;
pub mod jwks;
pub mod token;

pub use error::ForgeAuthError;
pub use events::{EVENT_MAPPING, ForgeEvent, connect_name_of, forge_names_of, is_forge_event_name};
pub use jwks::JwksProvider;
pub use token::{ForgeVerifier, Invocation, app_ari};

/// A Forge app system token (`x-forge-oauth-system`). It never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct SystemToken(String);

impl SystemToken {
    pub fn new(token: impl Into<String>) -> Self {
        SystemToken(token.into())
    }

    /// The token itself, for the `Authorization` header and encryption only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SystemToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SystemToken(<redacted>)")
    }
}
