//! The Confluence REST client handlers use to call a tenant back.
//!
//! [`ConfluenceClients`] is built once per process and shared; [`ConfluenceClients::for_tenant`]
//! gives a cheap [`ConfluenceClient`] for one tenant, acting as the app (a Connect JWT per
//! request) or, after [`ConfluenceClient::as_user`], as one of the tenant's users (an OAuth
//! 2.0 bearer token from the JWT bearer grant, at the authorization server of the tenant's
//! environment unless one is configured for all). A Forge installation's client calls its API
//! base URL with the app system token instead ([`ConfluenceClients::for_forge`]).
//!
//! Every request stays on the tenant's own base URL host, which must be on the tenant host
//! allowlist; redirects are never followed. 429 and 503 answers and refused connections,
//! and for idempotent requests server errors and timeouts, are retried with backoff, out
//! of the event's one retry budget; a request that is not idempotent and whose outcome is
//! unknown fails with [`ConfluenceError::OutcomeUnknown`], and the built-in write helpers
//! make their effect happen once (see [`WriteKey`]). Each tenant has a cap on requests in
//! flight and is paced when near its rate limit; a spent quota pauses the tenant's calls
//! (or, for the app's global quota, all calls) in every replica.

mod answer;
mod api;
mod authorization_server;
mod error;
mod forge;
mod limiter;
pub mod observe;
mod once;
mod pauses;
mod request;
mod retry;
mod send;
pub mod signals;
mod user_token;

pub use api::{
    BodyValue, ContentProperty, ContentV1, FooterComment, NewPage, Page, PageBody, PageUpdate,
    Version,
};
pub use error::ConfluenceError;
pub use once::WriteKey;
pub use request::{ApiRequest, ApiResponse, segment};

use std::sync::Arc;
use std::time::Duration;

use tributary_common::Config;
use tributary_common::connect::SharedSecret;
use tributary_common::hosts::HostAllowlist;
use tributary_common::store::{PauseStore, Tenant};

use crate::backoff::{BackoffSchedule, RetryBudget};

use authorization_server::AuthorizationServers;
use limiter::{Limiters, TenantLimiter};
use pauses::Pauses;
use user_token::{TokenKey, UserTokens, normalize_scopes};

/// How long a signed app request token is valid (Atlassian's framework uses 3 minutes).
const APP_TOKEN_TTL_SECONDS: i64 = 180;

/// Shared by every handler: one HTTP client, the retry/pacing policy, per-tenant limiters,
/// the user-token cache.
#[derive(Clone)]
pub struct ConfluenceClients {
    shared: Arc<Shared>,
}

struct Shared {
    http: reqwest::Client,
    app_key: String,
    allowlist: HostAllowlist,
    /// Hosts a Forge installation's API base URL may be on.
    forge_hosts: HostAllowlist,
    retry: BackoffSchedule,
    /// The longest retry wait a request sits through; longer ones go back to the runtime.
    hold_limit: Duration,
    limiters: Limiters,
    pauses: Pauses,
    user_tokens: UserTokens,
}

impl ConfluenceClients {
    pub fn from_config(config: &Config) -> Result<Self, ConfluenceError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.confluence_connect_timeout_ms))
            .timeout(Duration::from_millis(config.confluence_request_timeout_ms))
            // A redirect would need a new signature, and may point anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfluenceError::Config(format!("HTTP client: {e}")))?;
        let retry = BackoffSchedule::from_config(config);
        let max_in_flight = usize::try_from(config.confluence_max_concurrency_per_tenant)
            .unwrap_or(usize::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        observe::describe();
        Ok(ConfluenceClients {
            shared: Arc::new(Shared {
                user_tokens: UserTokens::new(
                    http.clone(),
                    AuthorizationServers::new(config.oauth_authorization_server_override()),
                ),
                http,
                app_key: config.app_key.clone(),
                allowlist: config.tenant_allowlist().clone(),
                forge_hosts: config.forge_api_hosts().clone(),
                retry,
                hold_limit: Duration::from_millis(config.processor_park_after_ms),
                limiters: Limiters::new(max_in_flight),
                pauses: Pauses::new(),
            }),
        })
    }

    /// What is left of a quota pause on this tenant's calls (its own or the app's).
    pub(crate) async fn pause_remaining(&self, client_key: &str) -> Option<Duration> {
        self.shared
            .pauses
            .remaining(client_key)
            .await
            .map(|(wait, _)| wait)
    }

    /// Shares quota pauses with every other replica through `store` (a processor does
    /// this with its own database); without it, pauses stay within this process.
    pub fn share_pauses_through(&self, store: PauseStore) {
        self.shared.pauses.share_through(store);
    }

    /// A client for one tenant; fails if the tenant's base URL host is not allowed.
    pub fn for_tenant(
        &self,
        tenant: &Tenant,
        secret: SharedSecret,
    ) -> Result<ConfluenceClient, ConfluenceError> {
        let site = TenantSite::new(tenant, &self.shared.allowlist)?;
        Ok(ConfluenceClient {
            limiter: self.shared.limiters.for_tenant(&tenant.client_key),
            shared: self.shared.clone(),
            site: Arc::new(site),
            credentials: Credentials::Connect(secret),
            identity: Identity::App,
            budget: None,
            writes: None,
        })
    }
}

/// Where one tenant lives, checked once when its client is made.
#[derive(Debug)]
struct TenantSite {
    client_key: String,
    /// The base URL as installed (the `tnt` of user grants).
    base_url: String,
    /// `scheme://host[:port]`.
    origin: String,
    host: String,
    /// The base URL's path without a trailing `/` (`/wiki`), stripped before hashing.
    base_path: String,
    oauth_client_id: Option<String>,
}

impl TenantSite {
    fn new(tenant: &Tenant, allowlist: &HostAllowlist) -> Result<TenantSite, ConfluenceError> {
        // The same check the ingest made at install, made again on every client: a row
        // written by anything else (or before the check existed) gets no request.
        let base_url = allowlist
            .check_base_url(&tenant.base_url)
            .map_err(|e| ConfluenceError::HostNotAllowed(e.to_string()))?;
        let url = url::Url::parse(&base_url)
            .map_err(|e| ConfluenceError::HostNotAllowed(format!("not a URL: {e}")))?;
        let host = url
            .host_str()
            .ok_or_else(|| ConfluenceError::HostNotAllowed("no host".into()))?
            .to_string();
        Ok(TenantSite {
            client_key: tenant.client_key.clone(),
            base_url,
            origin: url.origin().ascii_serialization(),
            host,
            base_path: url.path().trim_end_matches('/').to_string(),
            oauth_client_id: tenant.oauth_client_id.clone(),
        })
    }

    /// The absolute URL of `request`, and its path and query as sent (what the qsh covers).
    fn locate(&self, request: &ApiRequest) -> Result<(url::Url, String), ConfluenceError> {
        let relative = request.relative_target()?;
        let url = url::Url::parse(&format!("{}{}{relative}", self.origin, self.base_path))
            .map_err(|e| ConfluenceError::InvalidRequest(format!("bad URL: {e}")))?;
        if url.host_str() != Some(self.host.as_str()) {
            return Err(ConfluenceError::InvalidRequest(
                "the request would leave the tenant's host".into(),
            ));
        }
        let mut target = url.path().to_string();
        if let Some(query) = url.query() {
            target.push('?');
            target.push_str(query);
        }
        Ok((url, target))
    }
}

/// What the app signs or authorizes its requests with.
#[derive(Clone)]
enum Credentials {
    /// A Connect tenant's shared secret: a JWT per request.
    Connect(SharedSecret),
    /// A Forge installation's app system token, until it expires (Unix seconds).
    Forge(forge::ForgeCredentials),
}

#[derive(Debug, Clone)]
enum Identity {
    App,
    User(TokenKey),
}

/// Calls one tenant's Confluence, as the app by default or as a user after
/// [`ConfluenceClient::as_user`]. Cloning is cheap.
#[derive(Clone)]
pub struct ConfluenceClient {
    shared: Arc<Shared>,
    site: Arc<TenantSite>,
    credentials: Credentials,
    limiter: Arc<TenantLimiter>,
    identity: Identity,
    /// The retry budget of the event this client was made for.
    budget: Option<Arc<RetryBudget>>,
    /// The handler run the built-in writes belong to, when the client was made for one.
    writes: Option<WriteKey>,
}

impl std::fmt::Debug for ConfluenceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfluenceClient")
            .field("client_key", &self.site.client_key)
            .field("base_url", &self.site.base_url)
            .field("acting_user", &self.acting_user())
            .field("writes", &self.writes)
            .finish_non_exhaustive()
    }
}

impl ConfluenceClient {
    /// The same tenant, acting as the user with this Atlassian account id, with every scope
    /// the app has. Needs the app's `ACT_AS_USER` scope and the tenant's oauthClientId.
    pub fn as_user(&self, account_id: impl Into<String>) -> ConfluenceClient {
        self.as_user_with_scopes(account_id, &[])
    }

    /// Like [`ConfluenceClient::as_user`], asking for only these scopes (`READ`, `WRITE`...).
    pub fn as_user_with_scopes(
        &self,
        account_id: impl Into<String>,
        scopes: &[&str],
    ) -> ConfluenceClient {
        let key = TokenKey {
            client_key: Arc::from(self.site.client_key.as_str()),
            account_id: Arc::from(account_id.into()),
            scopes: Arc::from(normalize_scopes(scopes)),
        };
        ConfluenceClient {
            identity: Identity::User(key),
            ..self.clone()
        }
    }

    /// The same client, its built-in writes keyed by one handler's run on one event:
    /// retrying the run cannot make a comment or page twice, even when an earlier
    /// attempt's answer was lost. [`crate::Context::confluence`] sets it.
    pub fn for_event(self, key: &WriteKey) -> ConfluenceClient {
        ConfluenceClient {
            writes: Some(key.clone()),
            ..self
        }
    }

    /// The same tenant, acting as the app.
    pub fn as_app(&self) -> ConfluenceClient {
        ConfluenceClient {
            identity: Identity::App,
            ..self.clone()
        }
    }

    /// The same client, its retries taken from `budget` (the event's).
    pub(crate) fn with_budget(mut self, budget: Arc<RetryBudget>) -> ConfluenceClient {
        self.budget = Some(budget);
        self
    }

    pub fn client_key(&self) -> &str {
        &self.site.client_key
    }

    pub fn base_url(&self) -> &str {
        &self.site.base_url
    }

    /// The account id this client acts as, or `None` when it acts as the app.
    pub fn acting_user(&self) -> Option<&str> {
        match &self.identity {
            Identity::App => None,
            Identity::User(key) => Some(&key.account_id),
        }
    }
}
