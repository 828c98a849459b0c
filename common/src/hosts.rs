//! Where tenants may live: host allowlists such as `*.atlassian.net`, and the check that turns
//! a tenant's `baseUrl` into the one normalised URL that is stored, published and called.

/// One allowlist entry: a host (exact or `*.domain`) and, optionally, the port it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    host: HostPattern,
    port: PortRule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `.domain`: any subdomain, at any depth, but not the domain itself.
    Suffix(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortRule {
    /// Only the scheme's default port.
    Default,
    Only(u16),
    Any,
}

/// Patterns are exact host names or `*.` followed by a domain, each optionally followed by
/// `:PORT` or `:*` to allow a port other than the scheme's default. Development hosts
/// (loopback by default) may also be reached over `http` and on any port; they must still
/// be on the list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostAllowlist {
    patterns: Vec<Pattern>,
    development: Vec<String>,
}

/// Why a base URL is refused. Every variant is the caller's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaseUrlError {
    #[error("not an absolute URL without spaces, control characters or backslashes")]
    NotAUrl,
    #[error("scheme `{0}` is not allowed (https only, http for development hosts)")]
    Scheme(String),
    #[error("the URL carries user information")]
    Userinfo,
    #[error("the URL has a query or a fragment")]
    QueryOrFragment,
    #[error("port {0} is not allowed for this host")]
    Port(u16),
    #[error("host `{0}` is not on the tenant host allowlist")]
    HostNotAllowed(String),
}

/// Lower case, IDNA (punycode) and no trailing dot: the one spelling a host is compared in.
fn normalize_host(host: &str) -> Option<String> {
    let host = host.trim().trim_end_matches('.');
    if host.is_empty() {
        return None;
    }
    if host.starts_with('[') {
        return Some(host.to_ascii_lowercase());
    }
    match url::Host::parse(host).ok()? {
        url::Host::Domain(domain) => Some(domain.trim_end_matches('.').to_ascii_lowercase()),
        url::Host::Ipv4(ip) => Some(ip.to_string()),
        url::Host::Ipv6(ip) => Some(format!("[{ip}]")),
    }
}

/// Splits `host[:port]`, `[v6][:port]`.
fn split_port(pattern: &str) -> (&str, Option<&str>) {
    if pattern.starts_with('[') {
        return match pattern.split_once("]:") {
            Some((host, port)) => (&pattern[..host.len() + 1], Some(port)),
            None => (pattern, None),
        };
    }
    match pattern.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (pattern, None),
    }
}

impl HostAllowlist {
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let mut list = HostAllowlist::default();
        for raw in patterns {
            let pattern = raw.trim().to_ascii_lowercase();
            let bad = || format!("`{pattern}` is not a host or `*.domain` pattern");
            let (host, port) = split_port(&pattern);
            let port = match port {
                None => PortRule::Default,
                Some("*") => PortRule::Any,
                Some(port) => PortRule::Only(port.parse().map_err(|_| bad())?),
            };
            let host = if let Some(domain) = host.strip_prefix("*.") {
                if domain.is_empty() || domain.contains('*') {
                    return Err(format!("`{pattern}` is not a valid host pattern"));
                }
                HostPattern::Suffix(format!(".{}", normalize_host(domain).ok_or_else(bad)?))
            } else if host.is_empty() || host.contains('*') || host.contains('/') {
                return Err(bad());
            } else {
                HostPattern::Exact(normalize_host(host).ok_or_else(bad)?)
            };
            list.patterns.push(Pattern { host, port });
        }
        Ok(list)
    }

    /// Hosts (exact names) that may be reached over `http` and on any port: development
    /// sites and simulators on loopback, never a production tenant.
    pub fn with_development_hosts(mut self, hosts: &[String]) -> Result<Self, String> {
        for host in hosts {
            let normalized = normalize_host(host)
                .filter(|h| !h.contains('*') && !h.contains('/'))
                .ok_or_else(|| format!("`{host}` is not a host name or address"))?;
            self.development.push(normalized);
        }
        Ok(self)
    }

    fn matching(&self, host: &str) -> impl Iterator<Item = &Pattern> {
        self.patterns.iter().filter(move |p| match &p.host {
            HostPattern::Exact(exact) => exact == host,
            HostPattern::Suffix(suffix) => {
                host.ends_with(suffix.as_str()) && host.len() > suffix.len()
            }
        })
    }

    pub fn allows(&self, host: &str) -> bool {
        normalize_host(host).is_some_and(|host| self.matching(&host).next().is_some())
    }

    /// True for a base URL that [`HostAllowlist::check_base_url`] accepts.
    pub fn allows_url(&self, url: &str) -> bool {
        self.check_base_url(url).is_ok()
    }

    /// Checks a tenant base URL and returns it normalised: `scheme://host[:port]/path`,
    /// host lower case and IDNA-encoded without a trailing dot, no default port, no
    /// trailing `/`. `https` only (`http` on development hosts), no user information, no
    /// query or fragment, no port but the scheme's default unless an entry allows it.
    pub fn check_base_url(&self, raw: &str) -> Result<String, BaseUrlError> {
        // The URL parser would read `\` as `/` and drop tabs and newlines; refusing them
        // keeps what was checked and what another parser reads the same URL.
        if raw
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        {
            return Err(BaseUrlError::NotAUrl);
        }
        let url = url::Url::parse(raw).map_err(|_| BaseUrlError::NotAUrl)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(BaseUrlError::Userinfo);
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(BaseUrlError::QueryOrFragment);
        }
        let host = url
            .host_str()
            .and_then(normalize_host)
            .ok_or(BaseUrlError::NotAUrl)?;
        let development = self.development.contains(&host);
        match url.scheme() {
            "https" => {}
            "http" if development => {}
            other => return Err(BaseUrlError::Scheme(other.to_string())),
        }
        if self.matching(&host).next().is_none() {
            return Err(BaseUrlError::HostNotAllowed(host));
        }
        let port = match url.port() {
            None => String::new(),
            Some(port) => {
                let allowed = development
                    || self
                        .matching(&host)
                        .any(|p| matches!(p.port, PortRule::Any) || p.port == PortRule::Only(port));
                if !allowed {
                    return Err(BaseUrlError::Port(port));
                }
                format!(":{port}")
            }
        };
        let path = url.path().trim_end_matches('/');
        Ok(format!("{}://{host}{port}{path}", url.scheme()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> HostAllowlist {
        HostAllowlist::new(&[
            "*.atlassian.net".into(),
            "127.0.0.1".into(),
            "wiki.example.com:8443".into(),
            "*.bücher.example".into(),
        ])
        .expect("valid")
        .with_development_hosts(&["127.0.0.1".into(), "localhost".into()])
        .expect("valid")
    }

    #[test]
    fn wildcard_and_exact_patterns() {
        let list =
            HostAllowlist::new(&["*.atlassian.net".into(), "127.0.0.1".into()]).expect("valid");
        assert!(list.allows("acme.atlassian.net"));
        assert!(list.allows("ACME.Atlassian.NET."));
        assert!(list.allows("a.b.atlassian.net"));
        assert!(!list.allows("atlassian.net"));
        assert!(!list.allows("evilatlassian.net"));
        assert!(!list.allows("acme.atlassian.net.evil.com"));
        assert!(list.allows("127.0.0.1"));
        assert!(list.allows_url("https://acme.atlassian.net/wiki"));
        assert!(!list.allows_url("https://user@evil.com/?x=.atlassian.net"));
        assert!(HostAllowlist::new(&["*".into()]).is_err());
        assert!(HostAllowlist::new(&["x.example:port".into()]).is_err());
    }

    #[test]
    fn base_urls_are_normalised() {
        let list = list();
        for (raw, normalised) in [
            (
                "https://acme.atlassian.net/wiki",
                "https://acme.atlassian.net/wiki",
            ),
            (
                "https://ACME.Atlassian.NET./wiki/",
                "https://acme.atlassian.net/wiki",
            ),
            (
                "https://acme.atlassian.net:443/wiki",
                "https://acme.atlassian.net/wiki",
            ),
            ("https://acme.atlassian.net", "https://acme.atlassian.net"),
            (
                "https://wiki.example.com:8443/w",
                "https://wiki.example.com:8443/w",
            ),
            ("https://wiki.example.com/w", "https://wiki.example.com/w"),
            (
                "https://shop.BÜCHER.example/wiki",
                "https://shop.xn--bcher-kva.example/wiki",
            ),
            ("http://127.0.0.1:49152/wiki", "http://127.0.0.1:49152/wiki"),
        ] {
            assert_eq!(list.check_base_url(raw).as_deref(), Ok(normalised), "{raw}");
        }
    }

    #[test]
    fn base_urls_that_could_point_elsewhere_are_refused() {
        let list = list();
        for (raw, expected) in [
            (
                "https://evil.example@x.atlassian.net",
                BaseUrlError::Userinfo,
            ),
            ("https://x.atlassian.net:22", BaseUrlError::Port(22)),
            (
                "http://x.atlassian.net",
                BaseUrlError::Scheme("http".into()),
            ),
            (
                "https://x.atlassian.net\\@evil.example/wiki",
                BaseUrlError::NotAUrl,
            ),
            (
                "https://x.atlassian.net/wiki?next=evil",
                BaseUrlError::QueryOrFragment,
            ),
            (
                "https://x.atlassian.net/wiki#x",
                BaseUrlError::QueryOrFragment,
            ),
            ("https://x.atlassian.net/\twiki", BaseUrlError::NotAUrl),
            (
                "ftp://x.atlassian.net/wiki",
                BaseUrlError::Scheme("ftp".into()),
            ),
            ("https://wiki.example.com:8444/w", BaseUrlError::Port(8444)),
            (
                "https://x.atlassian.net.evil.example/wiki",
                BaseUrlError::HostNotAllowed("x.atlassian.net.evil.example".into()),
            ),
            ("not a url", BaseUrlError::NotAUrl),
        ] {
            assert_eq!(list.check_base_url(raw), Err(expected), "{raw}");
        }
    }
}
