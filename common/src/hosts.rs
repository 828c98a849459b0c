//! Host allowlists such as `*.atlassian.net`, for tenant base URLs.

/// Patterns are exact host names or `*.` followed by a domain (any subdomain of it,
/// at any depth, but not the domain itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostAllowlist {
    exact: Vec<String>,
    suffixes: Vec<String>,
}

impl HostAllowlist {
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let mut list = HostAllowlist::default();
        for pattern in patterns {
            let pattern = pattern.trim().to_ascii_lowercase();
            if let Some(domain) = pattern.strip_prefix("*.") {
                if domain.is_empty() || domain.contains('*') {
                    return Err(format!("`{pattern}` is not a valid host pattern"));
                }
                list.suffixes.push(format!(".{domain}"));
            } else if pattern.is_empty() || pattern.contains('*') || pattern.contains('/') {
                return Err(format!("`{pattern}` is not a host or `*.domain` pattern"));
            } else {
                list.exact.push(pattern);
            }
        }
        Ok(list)
    }

    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            return false;
        }
        self.exact.contains(&host)
            || self
                .suffixes
                .iter()
                .any(|s| host.ends_with(s.as_str()) && host.len() > s.len())
    }

    /// True for the host of an http(s) URL that the list allows.
    pub fn allows_url(&self, url: &str) -> bool {
        url::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .and_then(|u| u.host_str().map(|h| self.allows(h)))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
