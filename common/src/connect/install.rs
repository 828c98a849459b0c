//! Verification of signed installs: RS256 tokens whose key is named by `kid`.

use jsonwebtoken::Algorithm;
use serde_json::Value;

use super::error::AuthError;
use super::keys::{InstallKeyProvider, is_safe_key_id};
use super::token::{QshPolicy, RequestTarget, UnverifiedToken, VerifiedToken, now_unix};

/// Checks `installed` and `uninstalled` callbacks signed by Atlassian.
#[derive(Debug, Clone)]
pub struct InstallVerifier {
    keys: InstallKeyProvider,
    audiences: Vec<String>,
    leeway_seconds: u64,
}

/// A signed install that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedInstall {
    pub client_key: String,
    pub token: VerifiedToken,
}

impl InstallVerifier {
    /// `audiences` are the app's base URL and every regional or otherwise allowed URL.
    pub fn new(keys: InstallKeyProvider, audiences: Vec<String>, leeway_seconds: u64) -> Self {
        InstallVerifier {
            keys,
            audiences: audiences.iter().map(|a| normalize_audience(a)).collect(),
            leeway_seconds,
        }
    }

    pub async fn verify(
        &self,
        raw_token: &str,
        request: RequestTarget<'_>,
        body_client_key: &str,
    ) -> Result<VerifiedInstall, AuthError> {
        self.verify_at(raw_token, request, body_client_key, now_unix())
            .await
    }

    /// Every check but the comparison of `iss` with the body's clientKey, for a caller that
    /// verifies the token before it reads the body (and must then compare the two itself).
    pub async fn verify_token(
        &self,
        raw_token: &str,
        request: RequestTarget<'_>,
    ) -> Result<VerifiedInstall, AuthError> {
        self.verify_checked(raw_token, request, None, now_unix())
            .await
    }

    pub async fn verify_at(
        &self,
        raw_token: &str,
        request: RequestTarget<'_>,
        body_client_key: &str,
        now: i64,
    ) -> Result<VerifiedInstall, AuthError> {
        self.verify_checked(raw_token, request, Some(body_client_key), now)
            .await
    }

    async fn verify_checked(
        &self,
        raw_token: &str,
        request: RequestTarget<'_>,
        body_client_key: Option<&str>,
        now: i64,
    ) -> Result<VerifiedInstall, AuthError> {
        let token = UnverifiedToken::parse(raw_token)?;
        token.require_algorithm(Algorithm::RS256)?;
        let kid = token.key_id().ok_or(AuthError::InvalidKeyId)?;
        if !is_safe_key_id(kid) {
            return Err(AuthError::InvalidKeyId);
        }
        // The claims that cost nothing to check come before the key fetch, so a token that
        // could never pass sends no request to a key server.
        if body_client_key.is_some_and(|client_key| token.issuer() != client_key) {
            return Err(AuthError::IssuerMismatch);
        }
        if !self.audience_matches(token.claim("aud").as_ref()) {
            return Err(AuthError::WrongAudience);
        }
        token.check_times(now, self.leeway_seconds)?;
        let key = self.keys.key(kid).await?;
        token.verify_signature(&key, Algorithm::RS256)?;
        let verified =
            token.verify_time_and_qsh(request, QshPolicy::RequestOnly, now, self.leeway_seconds)?;
        Ok(VerifiedInstall {
            client_key: verified.issuer.clone(),
            token: verified,
        })
    }

    fn audience_matches(&self, aud: Option<&Value>) -> bool {
        let accepted = |a: &str| {
            self.audiences
                .iter()
                .any(|mine| *mine == normalize_audience(a))
        };
        match aud {
            Some(Value::String(a)) => accepted(a),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).any(accepted),
            _ => false,
        }
    }
}

fn normalize_audience(aud: &str) -> String {
    aud.trim().trim_end_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
mod tests;
