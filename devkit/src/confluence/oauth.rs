//! Atlassian's OAuth 2.0 authorization server for Connect apps acting as a user: the JWT
//! bearer grant at `POST /oauth2/token`. The assertion is checked as Atlassian checks it
//! (HS256 with the tenant's shared secret, `iss` the tenant's oauthClientId, `sub` the
//! user, `tnt` the site, `aud` this server) and answered with a bearer token the simulated
//! REST API then accepts for that tenant and user.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Shared, lock};

pub(super) const TOKEN_PATH: &str = "/oauth2/token";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const CLIENT_ID_PREFIX: &str = "urn:atlassian:connect:clientid:";
const ACCOUNT_PREFIX: &str = "urn:atlassian:connect:useraccountid:";
/// Lifetime of the bearer tokens handed out.
const TOKEN_LIFETIME_SECONDS: i64 = 900;

/// Grants made and bearer tokens handed out.
#[derive(Default)]
pub(super) struct Grants {
    requests: AtomicUsize,
    /// Each grant's verdict: the account id it was for, or why it was refused.
    verdicts: Mutex<Vec<Result<String, String>>>,
    /// Bearer token -> who holds it.
    tokens: Mutex<HashMap<String, Holder>>,
    /// How long each grant is held before it is answered.
    delay: Mutex<Duration>,
}

struct Holder {
    client_key: String,
    account_id: String,
    expires_at: i64,
}

impl Grants {
    /// The tenant and user a bearer token was granted for, while it is valid at `now`.
    pub fn holder(&self, bearer: &str, now: i64) -> Result<(String, String), &'static str> {
        match lock(&self.tokens).get(bearer) {
            Some(holder) if now < holder.expires_at => {
                Ok((holder.client_key.clone(), holder.account_id.clone()))
            }
            Some(_) => Err("bearer token expired"),
            None => Err("unknown bearer token"),
        }
    }
}

/// The authorization server's side of a [`super::Simulator`]: where the app asks for user
/// tokens, and what it asked.
#[derive(Clone)]
pub struct AuthorizationServer {
    shared: Arc<Shared>,
}

impl AuthorizationServer {
    pub(super) fn of(shared: Arc<Shared>) -> AuthorizationServer {
        AuthorizationServer { shared }
    }

    /// The URL for `TRIBUTARY_OAUTH_AUTHORIZATION_SERVER_URL` (and the assertions' `aud`).
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Token requests received.
    pub fn requests(&self) -> usize {
        self.shared.grants.requests.load(Ordering::SeqCst)
    }

    /// Each grant's verdict: the account id it was for, or why it was refused.
    pub fn grants(&self) -> Vec<Result<String, String>> {
        lock(&self.shared.grants.verdicts).clone()
    }

    /// Holds each grant this long, so concurrent callers overlap with it.
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.shared.grants.delay) = delay;
    }
}

#[derive(serde::Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    tnt: String,
}

pub(super) async fn grant(
    State(shared): State<Arc<Shared>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let n = shared.grants.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let delay = *lock(&shared.grants.delay);
    tokio::time::sleep(delay).await;
    let verdict = check_grant(&shared, &form);
    lock(&shared.grants.verdicts).push(verdict.clone().map(|(_, account)| account));
    match verdict {
        Ok((client_key, account_id)) => {
            let token = format!("user-token-{n}-{account_id}");
            lock(&shared.grants.tokens).insert(
                token.clone(),
                Holder {
                    client_key,
                    account_id,
                    expires_at: tributary_common::connect::token::now_unix()
                        + TOKEN_LIFETIME_SECONDS,
                },
            );
            axum::Json(json!({
                "access_token": token,
                "expires_in": TOKEN_LIFETIME_SECONDS,
                "token_type": "Bearer",
            }))
            .into_response()
        }
        Err(reason) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "invalid_grant", "error_description": reason })),
        )
            .into_response(),
    }
}

/// The tenant and account id of a valid grant request.
fn check_grant(
    shared: &Shared,
    form: &HashMap<String, String>,
) -> Result<(String, String), String> {
    if form.get("grant_type").map(String::as_str) != Some(GRANT_TYPE) {
        return Err("wrong grant_type".into());
    }
    let assertion = form.get("assertion").ok_or("no assertion")?;
    // The issuer names the tenant whose secret signed the assertion.
    let unverified = tributary_common::connect::UnverifiedToken::parse(assertion)
        .map_err(|e| format!("assertion: {e}"))?;
    let oauth_client_id = unverified
        .issuer()
        .strip_prefix(CLIENT_ID_PREFIX)
        .ok_or_else(|| format!("iss `{}`", unverified.issuer()))?
        .to_string();
    let (client_key, secret) = lock(&shared.tenants)
        .iter()
        .find(|(_, tenant)| tenant.oauth_client_id.as_deref() == Some(oauth_client_id.as_str()))
        .map(|(client_key, tenant)| (client_key.clone(), tenant.secret.clone()))
        .ok_or_else(|| format!("no tenant has the oauthClientId `{oauth_client_id}`"))?;
    let audience = format!("http://{}", shared.addr);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&[audience.as_str()]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
    let claims = jsonwebtoken::decode::<AssertionClaims>(
        assertion,
        &jsonwebtoken::DecodingKey::from_secret(secret.expose().as_bytes()),
        &validation,
    )
    .map_err(|e| format!("assertion: {e}"))?
    .claims;
    if claims.iss != format!("{CLIENT_ID_PREFIX}{oauth_client_id}") {
        return Err(format!("iss `{}`", claims.iss));
    }
    if claims.tnt != shared.base_url() {
        return Err(format!("tnt `{}`", claims.tnt));
    }
    let account_id = claims
        .sub
        .strip_prefix(ACCOUNT_PREFIX)
        .map(str::to_string)
        .ok_or_else(|| format!("sub `{}`", claims.sub))?;
    Ok((client_key, account_id))
}
