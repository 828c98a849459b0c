//! Which OAuth 2.0 authorization server grants a tenant's user tokens. Atlassian runs one per
//! environment, and a site's host says which environment it lives in; the same URL is the
//! assertion's `aud`, so a grant sent to the wrong server is refused even if it arrives.

/// Production sites (`*.atlassian.net`, and any host not recognised below).
pub const PRODUCTION: &str = "https://oauth-2-authorization-server.services.atlassian.com";
/// Atlassian's staging sites (`*.jira-dev.com`).
pub const STAGING: &str = "https://oauth-2-authorization-server.stg.services.atlassian.com";
/// Atlassian Government Cloud, FedRAMP Moderate (`*.atlassian-us-gov-mod.net`).
pub const FEDRAMP: &str = "https://oauth-2-authorization-server.services.atlassian-us-gov-mod.com";

const STAGING_SITE_DOMAIN: &str = "jira-dev.com";
const FEDRAMP_SITE_DOMAIN: &str = "atlassian-us-gov-mod.net";

/// Where user-token grants go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthorizationServers {
    /// Chosen from each tenant's host.
    PerHost,
    /// One server for every tenant, as configured (a simulated one in development).
    Configured(String),
}

impl AuthorizationServers {
    pub fn new(configured: Option<&str>) -> AuthorizationServers {
        match configured {
            Some(url) => AuthorizationServers::Configured(url.trim_end_matches('/').to_string()),
            None => AuthorizationServers::PerHost,
        }
    }

    /// The server (without a trailing `/`) for a tenant whose base URL is on `host`.
    pub fn for_host(&self, host: &str) -> &str {
        match self {
            AuthorizationServers::Configured(url) => url,
            AuthorizationServers::PerHost => for_site_host(host),
        }
    }
}

/// Atlassian's authorization server for a site on `host`. Unknown hosts get production's:
/// that is where a custom domain's site lives, and what Atlassian's own framework assumes.
pub fn for_site_host(host: &str) -> &'static str {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if in_domain(&host, STAGING_SITE_DOMAIN) {
        STAGING
    } else if in_domain(&host, FEDRAMP_SITE_DOMAIN) {
        FEDRAMP
    } else {
        PRODUCTION
    }
}

/// True for a host strictly under `domain` (a site is always a subdomain), so that
/// `evil-jira-dev.com` is not taken for staging.
fn in_domain(host: &str, domain: &str) -> bool {
    host.strip_suffix(domain)
        .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_site_host_gets_its_environments_server() {
        assert_eq!(for_site_host("acme.atlassian.net"), PRODUCTION);
        assert_eq!(for_site_host("acme.jira-dev.com"), STAGING);
        assert_eq!(for_site_host("ACME.Jira-Dev.com."), STAGING);
        assert_eq!(for_site_host("team.eu.jira-dev.com"), STAGING);
        assert_eq!(for_site_host("agency.atlassian-us-gov-mod.net"), FEDRAMP);
        // Custom domains and anything unrecognised are production sites.
        assert_eq!(for_site_host("wiki.example.com"), PRODUCTION);
        assert_eq!(for_site_host("127.0.0.1"), PRODUCTION);
    }

    #[test]
    fn a_lookalike_domain_is_not_an_environment() {
        assert_eq!(for_site_host("jira-dev.com"), PRODUCTION);
        assert_eq!(for_site_host("evil-jira-dev.com"), PRODUCTION);
        assert_eq!(for_site_host("jira-dev.com.attacker.net"), PRODUCTION);
        assert_eq!(
            for_site_host("x.atlassian-us-gov-mod.net.example"),
            PRODUCTION
        );
    }

    #[test]
    fn a_configured_server_is_used_for_every_host() {
        let configured = AuthorizationServers::new(Some("http://127.0.0.1:9000/"));
        assert_eq!(
            configured.for_host("acme.jira-dev.com"),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            configured.for_host("acme.atlassian.net"),
            "http://127.0.0.1:9000"
        );
        let per_host = AuthorizationServers::new(None);
        assert_eq!(per_host.for_host("acme.jira-dev.com"), STAGING);
        assert_eq!(per_host.for_host("acme.atlassian.net"), PRODUCTION);
    }
}
