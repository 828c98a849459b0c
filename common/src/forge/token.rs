//! Verifying a Forge Invocation Token: RS256 with a key from Forge's JWKS, issuer
//! `forge/invocation-token`, audience this app's ARI, time claims, and an `apiBaseUrl` on
//! the allowlist (it is where calls back will carry the app's token).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::error::ForgeAuthError;
use super::jwks::JwksProvider;
use crate::connect::token::now_unix;
use crate::hosts::HostAllowlist;

pub const ISSUER: &str = "forge/invocation-token";
const APP_ARI_PREFIX: &str = "ari:cloud:ecosystem::app/";
/// Forge's staging API host; its tokens are signed with the staging keys.
const STAGING_API_PREFIX: &str = "https://api.stg.atlassian.com/";
const MAX_KID_LEN: usize = 256;

/// The app ARI for a configured app id: an ARI as it is, a bare UUID with the ARI prefix.
pub fn app_ari(app_id: &str) -> String {
    let id = app_id.trim();
    if id.starts_with(APP_ARI_PREFIX) {
        id.to_ascii_lowercase()
    } else {
        format!("{APP_ARI_PREFIX}{}", id.to_ascii_lowercase())
    }
}

/// What a verified token says about the invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub app_id: String,
    /// `app.installationId`, an installation ARI; may change on reinstall.
    pub installation_id: String,
    /// `app.apiBaseUrl` without a trailing `/`, e.g. `https://api.atlassian.com/ex/confluence/<cloudId>`.
    pub api_base_url: String,
    /// The site, from `context.cloudId` or else the `apiBaseUrl`; stable across reinstalls.
    pub cloud_id: Option<String>,
    pub environment_type: Option<String>,
    pub environment_id: Option<String>,
    pub module_key: Option<String>,
    pub claims: Map<String, Value>,
}

/// Checks FITs for one app.
#[derive(Debug, Clone)]
pub struct ForgeVerifier {
    app_ari: String,
    production: JwksProvider,
    staging: JwksProvider,
    api_hosts: HostAllowlist,
    leeway_seconds: i64,
}

impl ForgeVerifier {
    /// `app_id` is the app's ARI or bare UUID; tokens whose `apiBaseUrl` is Forge's staging
    /// API are checked against `staging`, every other against `production`, as Atlassian's
    /// frameworks do.
    pub fn new(
        app_id: &str,
        production: JwksProvider,
        staging: JwksProvider,
        api_hosts: HostAllowlist,
        leeway_seconds: u64,
    ) -> Self {
        ForgeVerifier {
            app_ari: app_ari(app_id),
            production,
            staging,
            api_hosts,
            leeway_seconds: i64::try_from(leeway_seconds).unwrap_or(i64::MAX / 4),
        }
    }

    pub fn app_ari(&self) -> &str {
        &self.app_ari
    }

    /// The token from `Authorization: Bearer <token>`.
    pub fn bearer(authorization: Option<&str>) -> Result<&str, ForgeAuthError> {
        let value = authorization.ok_or(ForgeAuthError::MissingToken)?.trim();
        let (scheme, token) = value.split_once(' ').ok_or(ForgeAuthError::MissingToken)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(ForgeAuthError::MissingToken);
        }
        Ok(token)
    }

    pub async fn verify(&self, raw: &str) -> Result<Invocation, ForgeAuthError> {
        self.verify_at(raw, now_unix()).await
    }

    pub async fn verify_at(&self, raw: &str, now: i64) -> Result<Invocation, ForgeAuthError> {
        let (header, claims) = decode_unverified(raw)?;
        // The header's alg is checked before any key is touched: `none`, and HS256 keyed
        // with the public key, never reach a verifier.
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(ForgeAuthError::Malformed("header has no alg"))?;
        if alg != "RS256" {
            return Err(ForgeAuthError::UnsupportedAlgorithm(
                alg.chars().take(16).collect(),
            ));
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty() && k.len() <= MAX_KID_LEN)
            .ok_or(ForgeAuthError::InvalidKeyId)?;
        let app = claims.get("app").and_then(Value::as_object);
        let claimed_api = app
            .and_then(|a| a.get("apiBaseUrl"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let keys = if claimed_api.starts_with(STAGING_API_PREFIX) {
            &self.staging
        } else {
            &self.production
        };
        let key = keys.key(kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Map<String, Value>>(raw, &key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => ForgeAuthError::BadSignature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                ForgeAuthError::UnsupportedAlgorithm(alg.to_string())
            }
            _ => ForgeAuthError::Malformed("signature could not be checked"),
        })?;

        if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) {
            return Err(ForgeAuthError::WrongIssuer);
        }
        if !self.audience_matches(claims.get("aud")) {
            return Err(ForgeAuthError::WrongAudience);
        }
        let exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .ok_or(ForgeAuthError::MissingClaim("exp"))? as i64;
        if now > exp.saturating_add(self.leeway_seconds) {
            return Err(ForgeAuthError::Expired);
        }
        for name in ["nbf", "iat"] {
            if let Some(t) = claims.get(name).and_then(Value::as_f64)
                && (t as i64) > now.saturating_add(self.leeway_seconds)
            {
                return Err(ForgeAuthError::NotYetValid);
            }
        }

        let app = app.ok_or(ForgeAuthError::MissingClaim("app"))?;
        let text = |obj: &Map<String, Value>, name: &str| {
            obj.get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let installation_id = text(app, "installationId")
            .ok_or(ForgeAuthError::MissingClaim("app.installationId"))?;
        // Checked and normalised as tenant base URLs are: https (http only on development
        // hosts), no user information, an allowed host and port.
        let api_base_url = self
            .api_hosts
            .check_base_url(
                &text(app, "apiBaseUrl").ok_or(ForgeAuthError::MissingClaim("app.apiBaseUrl"))?,
            )
            .map_err(|_| ForgeAuthError::ApiHostNotAllowed)?;
        let context = claims.get("context").and_then(Value::as_object);
        let cloud_id = context
            .and_then(|c| text(c, "cloudId"))
            .or_else(|| cloud_id_of(&api_base_url));
        let environment = app.get("environment").and_then(Value::as_object);
        let module = app.get("module").and_then(Value::as_object);
        Ok(Invocation {
            app_id: text(app, "id").unwrap_or_else(|| self.app_ari.clone()),
            installation_id,
            api_base_url,
            cloud_id,
            environment_type: environment.and_then(|e| text(e, "type")),
            environment_id: environment.and_then(|e| text(e, "id")),
            module_key: module
                .and_then(|m| text(m, "key"))
                .or_else(|| context.and_then(|c| text(c, "moduleKey"))),
            claims,
        })
    }

    fn audience_matches(&self, aud: Option<&Value>) -> bool {
        let mine = |a: &str| a.trim().eq_ignore_ascii_case(&self.app_ari);
        match aud {
            Some(Value::String(a)) => mine(a),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).any(mine),
            _ => false,
        }
    }
}

/// The cloud id in an API base URL of the form `.../ex/confluence/<cloudId>`.
pub fn cloud_id_of(api_base_url: &str) -> Option<String> {
    let url = url::Url::parse(api_base_url).ok()?;
    let mut segments = url.path_segments()?;
    while let Some(segment) = segments.next() {
        if segment == "ex" {
            let _product = segments.next()?;
            return segments
                .next()
                .filter(|id| !id.is_empty())
                .map(str::to_string);
        }
    }
    None
}

/// A JWT's header or claims, decoded but not trusted.
type Segment = Map<String, Value>;

fn decode_unverified(raw: &str) -> Result<(Segment, Segment), ForgeAuthError> {
    let mut parts = raw.split('.');
    let (Some(header), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ForgeAuthError::Malformed(
            "expected three dot-separated segments",
        ));
    };
    Ok((object(header)?, object(payload)?))
}

fn object(segment: &str) -> Result<Map<String, Value>, ForgeAuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|_| ForgeAuthError::Malformed("segment is not base64url"))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ForgeAuthError::Malformed("segment is not a JSON object")),
    }
}

#[cfg(test)]
mod tests;
