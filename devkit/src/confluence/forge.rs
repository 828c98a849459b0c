//! Confluence as a Forge installation calls it: through the API gateway at
//! `/ex/confluence/<cloudId>/wiki/...` with `Authorization: Bearer <app system token>`.

use super::auth::Checked;
use super::{BASE_PATH, Caller, Shared, Verdict, lock};

/// The gateway's path prefix for a site's Confluence.
pub const API_PREFIX: &str = "/ex/confluence/";

/// A site reachable through the gateway.
#[derive(Debug, Clone)]
pub(super) struct ForgeSite {
    pub system_token: String,
    /// The tenant whose pages the site serves.
    pub client_key: String,
}

/// For a request through the gateway: who called, and the target as the site sees it
/// (`/wiki/...`). `None` for any other request.
pub(super) fn check(
    shared: &Shared,
    target: &str,
    authorization: Option<&str>,
) -> Option<(Checked, String)> {
    let rest = target.strip_prefix(API_PREFIX)?;
    let (cloud_id, site_target) = rest.split_once('/').unwrap_or((rest, ""));
    let site_target = format!("/{site_target}");
    let site = lock(&shared.forge_sites).get(cloud_id).cloned();
    let refused = |reason: &str| Checked {
        caller: Caller::Nobody,
        client_key: None,
        canonical: String::new(),
        verdict: Verdict::Refused(reason.to_string()),
    };
    let Some(site) = site else {
        return Some((refused("no such cloud id"), site_target));
    };
    let path = site_target.split('?').next().unwrap_or_default();
    let checked = match authorization.and_then(|a| a.strip_prefix("Bearer ")) {
        None => refused("no bearer token"),
        Some(token) if token != site.system_token => {
            refused("not this installation's app system token")
        }
        Some(_) if !path.starts_with(&format!("{BASE_PATH}/")) => {
            refused("path is not under /wiki")
        }
        Some(_) => Checked {
            caller: Caller::Forge,
            client_key: Some(site.client_key.clone()),
            canonical: String::new(),
            verdict: Verdict::Accepted,
        },
    };
    Some((checked, site_target))
}
