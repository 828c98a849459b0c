//! Confluence's checks on an app's request: which tenant it is for, and whether its token
//! holds for exactly this request.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use tributary_common::connect::token::now_unix;
use tributary_common::connect::{QshPolicy, RequestTarget, SharedSecret, UnverifiedToken};

use super::{BASE_PATH, SimulatorSettings, Verdict};

/// The tokens an app may hold for its own calls live about three minutes; Confluence
/// refuses ones that claim much longer.
const MAX_TOKEN_LIFETIME_SECONDS: i64 = 600;

pub(super) struct Checked {
    pub client_key: Option<String>,
    pub verdict: Verdict,
}

fn refused(client_key: Option<String>, reason: impl Into<String>) -> Checked {
    Checked {
        client_key,
        verdict: Verdict::Refused(reason.into()),
    }
}

/// Checks `authorization` (`JWT <token>`) for `method` and `target` (path and query as
/// received).
pub(super) fn check(
    settings: &SimulatorSettings,
    secrets: &HashMap<String, SharedSecret>,
    method: &str,
    target: &str,
    authorization: Option<&str>,
) -> Checked {
    let Some(authorization) = authorization else {
        return refused(None, "no Authorization header");
    };
    let Some(raw) = authorization.strip_prefix("JWT ") else {
        return refused(None, "not a JWT Authorization header");
    };
    let client_key = match audience(raw) {
        Ok(client_key) => client_key,
        Err(reason) => return refused(None, reason),
    };
    let Some(secret) = secrets.get(&client_key) else {
        return refused(Some(client_key), "aud names no tenant of this site");
    };
    let path = target.split('?').next().unwrap_or_default();
    if path != BASE_PATH && !path.starts_with(&format!("{BASE_PATH}/")) {
        return refused(Some(client_key), format!("path is not under {BASE_PATH}"));
    }
    let token = match UnverifiedToken::parse(raw) {
        Ok(token) => token,
        Err(error) => return refused(Some(client_key), error.to_string()),
    };
    if token.issuer() != settings.app_key {
        return refused(Some(client_key), "iss is not the app key");
    }
    // Signature, then exp/iat with leeway, then the qsh recomputed from this very request.
    let verified = match token.verify_hs256(
        secret,
        RequestTarget {
            method,
            target,
            base_path: BASE_PATH,
        },
        QshPolicy::RequestOnly,
        now_unix(),
        settings.leeway_seconds,
    ) {
        Ok(verified) => verified,
        Err(error) => return refused(Some(client_key), error.code()),
    };
    let iat = verified.claims.get("iat").and_then(Value::as_i64);
    let exp = verified.claims.get("exp").and_then(Value::as_i64);
    match (iat, exp) {
        (Some(iat), Some(exp)) if exp - iat <= MAX_TOKEN_LIFETIME_SECONDS => Checked {
            client_key: Some(client_key),
            verdict: Verdict::Accepted,
        },
        (Some(_), Some(_)) => refused(Some(client_key), "token lives too long"),
        _ => refused(Some(client_key), "iat or exp missing"),
    }
}

/// The clientKey in the token's `aud` (`["clientKey"]`, or a plain string), read before the
/// signature is checked so that the right secret can check it.
fn audience(raw: &str) -> Result<String, &'static str> {
    let claims = raw
        .split('.')
        .nth(1)
        .and_then(|segment| URL_SAFE_NO_PAD.decode(segment.trim_end_matches('=')).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .ok_or("token claims are not JSON")?;
    match claims.get("aud") {
        Some(Value::Array(values)) => match values.as_slice() {
            [Value::String(client_key)] => Ok(client_key.clone()),
            _ => Err("aud is not [clientKey]"),
        },
        Some(Value::String(client_key)) => Ok(client_key.clone()),
        _ => Err("no aud claim"),
    }
}
