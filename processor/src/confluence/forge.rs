//! Calling back a Forge installation: requests go to its API base URL
//! (`https://api.atlassian.com/ex/confluence/<cloudId>/wiki/...`) with
//! `Authorization: Bearer <app system token>`, under the same retries, pacing and host
//! rules as Connect calls.

use std::sync::Arc;

use tributary_common::connect::token::now_unix;
use tributary_common::forge::SystemToken;
use tributary_common::store::ForgeInstallation;

use super::{
    ConfluenceClient, ConfluenceClients, ConfluenceError, Credentials, Identity, TenantSite,
};

/// The app system token of one installation and when it stops being used.
#[derive(Clone)]
pub(super) struct ForgeCredentials {
    token: SystemToken,
    expires_at: i64,
}

impl ForgeCredentials {
    /// The token for one request, or a clear error once it has expired (the next Forge
    /// delivery to this installation brings a fresh one).
    pub(super) fn bearer(&self) -> Result<String, ConfluenceError> {
        if now_unix() >= self.expires_at {
            return Err(ConfluenceError::ForgeToken(
                "the stored app system token has expired; a fresh one arrives with the next Forge event".into(),
            ));
        }
        Ok(self.token.expose().to_string())
    }
}

impl ConfluenceClients {
    /// A client for a Forge installation, acting as the app with its system token. Fails
    /// when no token was ever delivered (enable `appSystemToken` on the endpoint) or when
    /// the API base URL's host is not on the Forge API host allowlist.
    pub fn for_forge(
        &self,
        installation: &ForgeInstallation,
        token: Option<SystemToken>,
    ) -> Result<ConfluenceClient, ConfluenceError> {
        let (Some(token), Some(expires_at)) = (token, installation.token_expires_at) else {
            return Err(ConfluenceError::ForgeToken(
                "no app system token stored for this installation; enable appSystemToken on the Forge endpoint".into(),
            ));
        };
        let api = installation.api_base_url.as_deref().ok_or_else(|| {
            ConfluenceError::HostNotAllowed("the installation has no API base URL yet".into())
        })?;
        let site = forge_site(installation, api, &self.shared.forge_hosts)?;
        Ok(ConfluenceClient {
            limiter: self.shared.limiters.for_tenant(&installation.tenant_key),
            shared: self.shared.clone(),
            site: Arc::new(site),
            credentials: Credentials::Forge(ForgeCredentials { token, expires_at }),
            identity: Identity::App,
            budget: None,
            writes: None,
        })
    }
}

fn forge_site(
    installation: &ForgeInstallation,
    api_base_url: &str,
    allowlist: &tributary_common::hosts::HostAllowlist,
) -> Result<TenantSite, ConfluenceError> {
    let refused = |why: String| ConfluenceError::HostNotAllowed(why);
    let url = url::Url::parse(api_base_url)
        .map_err(|e| refused(format!("`{api_base_url}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(refused(format!(
            "`{api_base_url}` is not a plain http(s) URL"
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| refused(format!("`{api_base_url}` has no host")))?
        .to_string();
    if !allowlist.allows(&host) {
        return Err(refused(format!(
            "host `{host}` is not on the Forge API host allowlist"
        )));
    }
    // Confluence's REST APIs sit under `/wiki` of the product's API base URL.
    let base_path = format!("{}/wiki", url.path().trim_end_matches('/'));
    Ok(TenantSite {
        client_key: installation.tenant_key.clone(),
        base_url: format!("{}{base_path}", url.origin().ascii_serialization()),
        origin: url.origin().ascii_serialization(),
        host,
        base_path,
        oauth_client_id: None,
    })
}
