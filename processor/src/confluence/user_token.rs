//! Access tokens for acting as a user: the OAuth 2.0 JWT bearer grant Connect apps use
//! (`ACT_AS_USER` scope), cached per tenant, user and scopes until shortly before expiry.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tributary_common::connect::SharedSecret;
use tributary_common::connect::token::{now_unix, sign_hs256};

use super::authorization_server::AuthorizationServers;
use super::error::{ConfluenceError, excerpt};
use super::observe;

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The token endpoint, under the authorization server's URL.
const TOKEN_PATH: &str = "/oauth2/token";
/// Lifetime of the assertion sent to the authorization server.
const ASSERTION_TTL_SECONDS: i64 = 60;
/// A token is dropped this long before it expires, so no request carries one that runs out
/// on its way.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// Tokens kept at most; the least recently used go first.
const CACHE_CAPACITY: u64 = 10_000;

/// Whose token: one per tenant, user and set of scopes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TokenKey {
    pub client_key: Arc<str>,
    pub account_id: Arc<str>,
    /// Upper case, sorted, space-separated; empty for the app's full scopes.
    pub scopes: Arc<str>,
}

/// What the grant needs to know about the tenant.
pub(crate) struct GrantSubject<'a> {
    pub oauth_client_id: &'a str,
    pub base_url: &'a str,
    pub secret: &'a SharedSecret,
}

#[derive(Clone)]
pub(crate) struct AccessToken {
    value: Arc<str>,
    lifetime: Duration,
}

impl AccessToken {
    pub fn bearer(&self) -> &str {
        &self.value
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

struct ExpireBeforeToken;

impl moka::Expiry<TokenKey, AccessToken> for ExpireBeforeToken {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        value: &AccessToken,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.lifetime)
    }
}

/// The cache and the grant. A cache miss runs one grant per key however many callers wait
/// on it (`try_get_with` joins concurrent callers onto the first one's request).
pub(crate) struct UserTokens {
    http: reqwest::Client,
    /// Where each tenant's grants go; the same URL is the assertion's `aud`.
    servers: AuthorizationServers,
    cache: moka::future::Cache<TokenKey, AccessToken>,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: String,
    sub: String,
    tnt: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
    #[serde(default)]
    token_type: Option<String>,
}

impl UserTokens {
    pub fn new(http: reqwest::Client, servers: AuthorizationServers) -> UserTokens {
        UserTokens {
            http,
            servers,
            cache: moka::future::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .expire_after(ExpireBeforeToken)
                .build(),
        }
    }

    pub async fn get(
        &self,
        key: &TokenKey,
        subject: GrantSubject<'_>,
    ) -> Result<AccessToken, ConfluenceError> {
        self.cache
            .try_get_with(key.clone(), self.grant(key, subject))
            .await
            .map_err(Arc::unwrap_or_clone)
    }

    /// Forgets a token Confluence refused, so the next call fetches a new one.
    pub async fn forget(&self, key: &TokenKey) {
        self.cache.invalidate(key).await;
    }

    async fn grant(
        &self,
        key: &TokenKey,
        subject: GrantSubject<'_>,
    ) -> Result<AccessToken, ConfluenceError> {
        let outcome = self.request_token(key, subject).await;
        observe::record_token_refresh(if outcome.is_ok() {
            "success"
        } else {
            "failure"
        });
        outcome
    }

    /// The authorization server for a tenant at `base_url`. Tokens are cached per tenant, not
    /// per server: a tenant's server changes only with its host, which a site keeps for far
    /// longer than a token lives.
    fn server_for(&self, base_url: &str) -> Result<&str, ConfluenceError> {
        let url = url::Url::parse(base_url)
            .map_err(|e| ConfluenceError::HostNotAllowed(format!("not a URL: {e}")))?;
        let host = url
            .host_str()
            .ok_or_else(|| ConfluenceError::HostNotAllowed("no host".into()))?;
        Ok(self.servers.for_host(host))
    }

    async fn request_token(
        &self,
        key: &TokenKey,
        subject: GrantSubject<'_>,
    ) -> Result<AccessToken, ConfluenceError> {
        let audience = self.server_for(subject.base_url)?;
        let issued_at = now_unix();
        let claims = AssertionClaims {
            iss: format!("urn:atlassian:connect:clientid:{}", subject.oauth_client_id),
            sub: format!("urn:atlassian:connect:useraccountid:{}", key.account_id),
            tnt: subject.base_url,
            aud: audience,
            iat: issued_at,
            exp: issued_at + ASSERTION_TTL_SECONDS,
        };
        let assertion = sign_hs256(&claims, subject.secret)
            .map_err(|e| ConfluenceError::Signing(e.to_string()))?;
        let mut form = vec![
            ("grant_type", GRANT_TYPE),
            ("assertion", assertion.as_str()),
        ];
        if !key.scopes.is_empty() {
            form.push(("scope", &key.scopes));
        }
        let failed =
            |status: Option<u16>, message: String| ConfluenceError::TokenGrant { status, message };
        let answer = self
            .http
            .post(format!("{audience}{TOKEN_PATH}"))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            // The error text names the URL, never the form, so the assertion stays private.
            .map_err(|e| failed(None, e.without_url().to_string()))?;
        let status = answer.status().as_u16();
        let body = super::answer::read_capped(answer, super::answer::MAX_TOKEN_ANSWER_BYTES)
            .await
            .map_err(|e| match e {
                super::answer::ReadError::Transport(e) => {
                    failed(Some(status), e.without_url().to_string())
                }
                super::answer::ReadError::TooLarge(max) => failed(
                    Some(status),
                    format!("the answer is larger than {max} bytes"),
                ),
            })?;
        if !(200..300).contains(&status) {
            return Err(failed(Some(status), excerpt(&body)));
        }
        let token: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| failed(Some(status), format!("unexpected answer: {e}")))?;
        if token
            .token_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(failed(Some(status), "token type is not Bearer".into()));
        }
        Ok(AccessToken {
            value: Arc::from(token.access_token),
            lifetime: usable_lifetime(Duration::from_secs(token.expires_in)),
        })
    }
}

/// How long to keep a token: until a margin before it expires, and for short-lived tokens
/// three quarters of their life.
fn usable_lifetime(expires_in: Duration) -> Duration {
    if expires_in > EXPIRY_MARGIN * 4 {
        expires_in - EXPIRY_MARGIN
    } else {
        expires_in.mul_f64(0.75)
    }
}

/// The cache form of a scope list: upper case, sorted, deduplicated, space-separated.
pub(crate) fn normalize_scopes(scopes: &[&str]) -> String {
    let mut list: Vec<String> = scopes
        .iter()
        .map(|s| s.trim().to_ascii_uppercase())
        .filter(|s| !s.is_empty())
        .collect();
    list.sort();
    list.dedup();
    list.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_go_to_the_server_of_the_tenants_environment() {
        use super::super::authorization_server::{FEDRAMP, PRODUCTION, STAGING};
        let per_host = UserTokens::new(reqwest::Client::new(), AuthorizationServers::new(None));
        for (base_url, server) in [
            ("https://acme.atlassian.net/wiki", PRODUCTION),
            ("https://acme.jira-dev.com/wiki", STAGING),
            ("https://agency.atlassian-us-gov-mod.net/wiki", FEDRAMP),
        ] {
            assert_eq!(
                per_host.server_for(base_url).ok(),
                Some(server),
                "{base_url}"
            );
        }
        let configured = UserTokens::new(
            reqwest::Client::new(),
            AuthorizationServers::new(Some("http://127.0.0.1:9000")),
        );
        assert_eq!(
            configured.server_for("https://acme.jira-dev.com/wiki").ok(),
            Some("http://127.0.0.1:9000")
        );
        assert!(per_host.server_for("not a url").is_err());
    }

    #[test]
    fn tokens_are_dropped_before_they_expire() {
        assert_eq!(
            usable_lifetime(Duration::from_secs(900)),
            Duration::from_secs(840)
        );
        assert_eq!(
            usable_lifetime(Duration::from_secs(120)),
            Duration::from_secs(90)
        );
        assert_eq!(usable_lifetime(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn scopes_are_one_canonical_key() {
        assert_eq!(normalize_scopes(&["write", "READ", " read "]), "READ WRITE");
        assert_eq!(normalize_scopes(&[]), "");
    }

    #[test]
    fn a_token_never_prints() {
        let token = AccessToken {
            value: Arc::from("very-secret"),
            lifetime: Duration::from_secs(1),
        };
        assert!(!format!("{token:?}").contains("very-secret"));
    }
}
