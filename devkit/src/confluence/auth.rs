//! Confluence's checks on an app's request: who is calling, for which tenant, and whether
//! the credentials hold for exactly this request.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use tributary_common::connect::token::now_unix;
use tributary_common::connect::{CanonicalRequest, QshPolicy, RequestTarget, UnverifiedToken};

use super::{BASE_PATH, Caller, Shared, Verdict, lock};

/// The tokens an app may hold for its own calls live about three minutes; Confluence
/// refuses ones that claim much longer.
const MAX_TOKEN_LIFETIME_SECONDS: i64 = 600;

pub(super) struct Checked {
    pub caller: Caller,
    pub client_key: Option<String>,
    /// The canonical request of an app token's request (empty for other callers).
    pub canonical: String,
    pub verdict: Verdict,
}

impl Checked {
    fn refused(caller: Caller, client_key: Option<String>, reason: impl Into<String>) -> Checked {
        Checked {
            caller,
            client_key,
            canonical: String::new(),
            verdict: Verdict::Refused(reason.into()),
        }
    }
}

/// Checks `authorization` (`JWT <token>` as the app, `Bearer <token>` as a user) for
/// `method` and `target` (path and query as received).
pub(super) fn check(
    shared: &Shared,
    method: &str,
    target: &str,
    authorization: Option<&str>,
) -> Checked {
    let Some(authorization) = authorization else {
        return Checked::refused(Caller::Nobody, None, "no Authorization header");
    };
    let mut checked = if let Some(bearer) = authorization.strip_prefix("Bearer ") {
        check_user(shared, bearer)
    } else if let Some(raw) = authorization.strip_prefix("JWT ") {
        check_app(shared, method, target, raw)
    } else {
        return Checked::refused(Caller::Nobody, None, "unknown Authorization scheme");
    };
    let path = target.split('?').next().unwrap_or_default();
    if checked.verdict.is_accepted()
        && path != BASE_PATH
        && !path.starts_with(&format!("{BASE_PATH}/"))
    {
        checked.verdict = Verdict::Refused(format!("path is not under {BASE_PATH}"));
    }
    checked
}

fn check_user(shared: &Shared, bearer: &str) -> Checked {
    match shared.grants.holder(bearer, now_unix()) {
        Ok((client_key, account_id)) => Checked {
            caller: Caller::User(account_id),
            client_key: Some(client_key),
            canonical: String::new(),
            verdict: Verdict::Accepted,
        },
        Err(reason) => Checked::refused(Caller::Nobody, None, reason),
    }
}

fn check_app(shared: &Shared, method: &str, target: &str, raw: &str) -> Checked {
    // The qsh as Confluence computes it: from the method and target it received, relative
    // to the site's base path.
    let canonical = CanonicalRequest::new(method, target, BASE_PATH).canonical;
    let mut checked = verify_app_token(shared, method, target, raw);
    checked.canonical = canonical;
    checked
}

fn verify_app_token(shared: &Shared, method: &str, target: &str, raw: &str) -> Checked {
    let client_key = match audience(raw) {
        Ok(client_key) => client_key,
        Err(reason) => return Checked::refused(Caller::App, None, reason),
    };
    let refused = |reason: String| Checked::refused(Caller::App, Some(client_key.clone()), reason);
    let Some(secret) = lock(&shared.tenants)
        .get(&client_key)
        .map(|tenant| tenant.secret.clone())
    else {
        return refused("aud names no tenant of this site".into());
    };
    let token = match UnverifiedToken::parse(raw) {
        Ok(token) => token,
        Err(error) => return refused(error.to_string()),
    };
    if token.issuer() != shared.settings.app_key {
        return refused("iss is not the app key".into());
    }
    // Signature, then exp/iat with leeway, then the qsh recomputed from this very request.
    let verified = match token.verify_hs256(
        &secret,
        RequestTarget {
            method,
            target,
            base_path: BASE_PATH,
        },
        QshPolicy::RequestOnly,
        now_unix(),
        shared.settings.leeway_seconds,
    ) {
        Ok(verified) => verified,
        Err(error) => return refused(error.code().into()),
    };
    let iat = verified.claims.get("iat").and_then(Value::as_i64);
    let exp = verified.claims.get("exp").and_then(Value::as_i64);
    match (iat, exp) {
        (Some(iat), Some(exp)) if exp - iat <= MAX_TOKEN_LIFETIME_SECONDS => Checked {
            caller: Caller::App,
            client_key: Some(client_key),
            canonical: String::new(),
            verdict: Verdict::Accepted,
        },
        (Some(_), Some(_)) => refused("token lives too long".into()),
        _ => refused("iat or exp missing".into()),
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
