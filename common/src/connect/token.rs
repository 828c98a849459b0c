//! HS256 tokens: verifying the ones Confluence sends, signing the ones we send back.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde_json::{Map, Value};

use super::SharedSecret;
use super::canonical::{CONTEXT_QSH, accepted_qshes, qsh};
use super::error::AuthError;

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Longest `iss` (a clientKey or an app key) looked up anywhere. Confluence's are UUIDs.
pub const MAX_IDENTIFIER_LEN: usize = 256;

/// True for a value that can name a tenant or a key: not empty, not oversize, and free of
/// control characters (a NUL would be refused by the database, which must not turn into
/// an outage answer; the others have no business in an identifier).
pub fn is_plausible_identifier(value: &str) -> bool {
    !value.is_empty() && value.len() <= MAX_IDENTIFIER_LEN && !value.chars().any(char::is_control)
}

/// The request a token claims to be for, as this side received it.
#[derive(Debug, Clone, Copy)]
pub struct RequestTarget<'a> {
    pub method: &'a str,
    /// Path and query exactly as received.
    pub target: &'a str,
    /// Path of this side's base URL, stripped before hashing.
    pub base_path: &'a str,
}

/// Whether `qsh: "context-qsh"` (browser context tokens) is acceptable for this route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QshPolicy {
    RequestOnly,
    AllowContext,
}

/// A JWT whose header and claims were decoded but not yet trusted.
#[derive(Debug, Clone)]
pub struct UnverifiedToken<'a> {
    raw: &'a str,
    alg: String,
    kid: Option<String>,
    claims: Map<String, Value>,
    issuer: String,
}

/// The claims of a token that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    pub issuer: String,
    pub subject: Option<String>,
    pub context: Option<Value>,
    pub claims: Map<String, Value>,
}

impl<'a> UnverifiedToken<'a> {
    pub fn parse(raw: &'a str) -> Result<Self, AuthError> {
        let mut parts = raw.split('.');
        let (Some(header), Some(payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "expected three dot-separated segments",
            ));
        };
        let header = decode_json_object(header)?;
        let claims = decode_json_object(payload)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(AuthError::Malformed("header has no alg"))?
            .to_string();
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(AuthError::Malformed("kid is not a string")),
        };
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .filter(|iss| !iss.is_empty())
            .ok_or(AuthError::Malformed("no iss claim"))?
            .to_string();
        if !is_plausible_identifier(&issuer) {
            return Err(AuthError::Malformed("iss is not a plausible clientKey"));
        }
        if !claims.get("exp").is_some_and(Value::is_number) {
            return Err(AuthError::Malformed("no numeric exp claim"));
        }
        Ok(UnverifiedToken {
            raw,
            alg,
            kid,
            claims,
            issuer,
        })
    }

    pub fn algorithm(&self) -> &str {
        &self.alg
    }

    pub fn key_id(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The `iss` claim: the tenant's clientKey for tokens from Confluence.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Fails unless the header names exactly `expected`.
    pub fn require_algorithm(&self, expected: Algorithm) -> Result<(), AuthError> {
        let wanted = match expected {
            Algorithm::HS256 => "HS256",
            Algorithm::RS256 => "RS256",
            _ => return Err(AuthError::UnsupportedAlgorithm(self.alg.clone())),
        };
        if self.alg == wanted {
            Ok(())
        } else {
            Err(AuthError::UnsupportedAlgorithm(self.alg.clone()))
        }
    }

    /// Checks the HMAC with `secret`, then time and qsh.
    pub fn verify_hs256(
        &self,
        secret: &SharedSecret,
        request: RequestTarget<'_>,
        policy: QshPolicy,
        now: i64,
        leeway_seconds: u64,
    ) -> Result<VerifiedToken, AuthError> {
        self.check_hs256(secret, request, policy, now, leeway_seconds)?;
        Ok(self.verified())
    }

    /// The checks of [`Self::verify_hs256`] without building the verified claims, for a
    /// caller that may check one token against more than one secret and then keeps it with
    /// [`Self::into_verified`].
    pub fn check_hs256(
        &self,
        secret: &SharedSecret,
        request: RequestTarget<'_>,
        policy: QshPolicy,
        now: i64,
        leeway_seconds: u64,
    ) -> Result<(), AuthError> {
        self.require_algorithm(Algorithm::HS256)?;
        self.verify_signature(
            &DecodingKey::from_secret(secret.expose().as_bytes()),
            Algorithm::HS256,
        )?;
        self.check_time_and_qsh(request, policy, now, leeway_seconds)
    }

    /// The claims of a token whose checks passed, moved rather than copied.
    pub fn into_verified(self) -> VerifiedToken {
        VerifiedToken {
            subject: self
                .claims
                .get("sub")
                .and_then(Value::as_str)
                .map(str::to_string),
            context: self.claims.get("context").cloned(),
            issuer: self.issuer,
            claims: self.claims,
        }
    }

    fn verified(&self) -> VerifiedToken {
        self.clone().into_verified()
    }

    pub(crate) fn verify_signature(
        &self,
        key: &DecodingKey,
        alg: Algorithm,
    ) -> Result<(), AuthError> {
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        // The claims were decoded by `parse` already; here they are only skipped over.
        match jsonwebtoken::decode::<serde::de::IgnoredAny>(self.raw, key, &validation) {
            Ok(_) => Ok(()),
            Err(err) => match err.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => Err(AuthError::BadSignature),
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                    Err(AuthError::UnsupportedAlgorithm(self.alg.clone()))
                }
                _ => Err(AuthError::Malformed("signature could not be checked")),
            },
        }
    }

    pub(crate) fn verify_time_and_qsh(
        &self,
        request: RequestTarget<'_>,
        policy: QshPolicy,
        now: i64,
        leeway_seconds: u64,
    ) -> Result<VerifiedToken, AuthError> {
        self.check_time_and_qsh(request, policy, now, leeway_seconds)?;
        Ok(self.verified())
    }

    fn check_time_and_qsh(
        &self,
        request: RequestTarget<'_>,
        policy: QshPolicy,
        now: i64,
        leeway_seconds: u64,
    ) -> Result<(), AuthError> {
        self.check_times(now, leeway_seconds)?;
        let claimed = self
            .claims
            .get("qsh")
            .and_then(Value::as_str)
            .ok_or(AuthError::MissingQsh)?;
        if claimed == CONTEXT_QSH {
            if policy != QshPolicy::AllowContext {
                return Err(AuthError::ContextQshNotAllowed);
            }
        } else {
            let accepted = accepted_qshes(request.method, request.target, request.base_path);
            // Both compared, so the time taken does not tell which form came close.
            let matches = accepted.iter().fold(false, |any, qsh| {
                constant_time_eq(claimed.as_bytes(), qsh.as_bytes()) | any
            });
            if !matches {
                return Err(AuthError::QshMismatch);
            }
        }
        Ok(())
    }

    /// `exp` (with leeway) and, when present, `iat` against `now`.
    pub(crate) fn check_times(&self, now: i64, leeway_seconds: u64) -> Result<(), AuthError> {
        let leeway = i64::try_from(leeway_seconds).unwrap_or(i64::MAX / 4);
        let exp = self
            .claims
            .get("exp")
            .and_then(Value::as_f64)
            .unwrap_or(0.0) as i64;
        if now > exp.saturating_add(leeway) {
            return Err(AuthError::Expired);
        }
        if let Some(iat) = self.claims.get("iat").and_then(Value::as_f64)
            && (iat as i64) > now.saturating_add(leeway)
        {
            return Err(AuthError::IssuedInFuture);
        }
        Ok(())
    }

    pub(crate) fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }
}

fn decode_json_object(segment: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed("segment is not base64url"))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(AuthError::Malformed("segment is not a JSON object")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the token from `Authorization: JWT <token>` or, failing that, a `jwt` query parameter.
pub fn extract_token<'a>(
    authorization: Option<&'a str>,
    query: Option<&'a str>,
) -> Option<std::borrow::Cow<'a, str>> {
    if let Some(value) = authorization {
        let value = value.trim();
        if let Some(token) = value
            .strip_prefix("JWT ")
            .or_else(|| value.strip_prefix("jwt "))
        {
            return Some(std::borrow::Cow::Borrowed(token.trim()));
        }
    }
    let query = query?;
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == "jwt").then(|| percent_encoding::percent_decode_str(value).decode_utf8_lossy())
    })
}

#[derive(Debug, Serialize)]
struct OutboundClaims<'a> {
    iss: &'a str,
    iat: i64,
    exp: i64,
    qsh: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<[&'a str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
}

/// A token for one outbound request: `iss` the app key, `aud` the tenant's clientKey.
#[derive(Debug, Clone, Copy)]
pub struct OutboundToken<'a> {
    pub app_key: &'a str,
    pub client_key: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub request: RequestTarget<'a>,
    pub issued_at: i64,
    pub ttl_seconds: i64,
}

impl OutboundToken<'_> {
    pub fn sign(&self, secret: &SharedSecret) -> Result<String, SignError> {
        let claims = OutboundClaims {
            iss: self.app_key,
            iat: self.issued_at,
            exp: self.issued_at + self.ttl_seconds,
            qsh: qsh(
                self.request.method,
                self.request.target,
                self.request.base_path,
            ),
            aud: self.client_key.map(|k| [k]),
            sub: self.subject,
        };
        sign_hs256(&claims, secret)
    }
}

/// Signs any claims set with HS256 and the tenant's shared secret.
pub fn sign_hs256<T: Serialize>(claims: &T, secret: &SharedSecret) -> Result<String, SignError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .map_err(|e| SignError(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
#[error("could not sign token: {0}")]
pub struct SignError(String);

#[cfg(test)]
mod tests;
