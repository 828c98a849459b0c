//! Canonical request and query string hash (qsh), as Connect defines them.
//!
//! The canonical string is `METHOD&PATH&QUERY`; the qsh is the lowercase hex SHA-256 of it.
//! Both sides of a Connect exchange must compute it byte for byte alike, so the rules here
//! follow Atlassian's libraries rather than any general URL normalisation.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// Everything but RFC 3986 unreserved characters is percent-encoded.
const QUERY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The literal qsh browser context tokens carry instead of a request hash.
pub const CONTEXT_QSH: &str = "context-qsh";

/// The canonical form of one request and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalRequest {
    pub canonical: String,
    pub qsh: String,
}

impl CanonicalRequest {
    /// `request_target` is the path and query exactly as received (or as it will be sent);
    /// `base_path` is the path of the receiving side's base URL (`""` or e.g. `/wiki`).
    pub fn new(method: &str, request_target: &str, base_path: &str) -> Self {
        let (path, query) = match request_target.split_once('?') {
            Some((path, query)) => (path, query),
            None => (request_target, ""),
        };
        let canonical = format!(
            "{}&{}&{}",
            method.to_ascii_uppercase(),
            canonical_path(path, base_path),
            canonical_query(query)
        );
        let qsh = hex::encode(Sha256::digest(canonical.as_bytes()));
        CanonicalRequest { canonical, qsh }
    }
}

/// Shorthand for the hash alone.
pub fn qsh(method: &str, request_target: &str, base_path: &str) -> String {
    CanonicalRequest::new(method, request_target, base_path).qsh
}

fn canonical_path(path: &str, base_path: &str) -> String {
    let base = base_path.trim_end_matches('/');
    let relative = match path.strip_prefix(base) {
        Some(rest) if !base.is_empty() && (rest.is_empty() || rest.starts_with('/')) => rest,
        _ => path,
    };
    let mut out = String::with_capacity(relative.len() + 1);
    if !relative.starts_with('/') {
        out.push('/');
    }
    out.push_str(relative);
    if out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    out.replace('&', "%26")
}

fn canonical_query(query: &str) -> String {
    // Names and values are compared as decoded bytes so that invalid UTF-8 cannot fail the
    // hash; they are re-encoded the one canonical way before joining.
    let mut params: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode_component(raw_name);
        if name == b"jwt" {
            continue;
        }
        let encoded_name = encode_component(&name);
        let value = decode_component(raw_value);
        match params.iter_mut().find(|(n, _)| *n == encoded_name) {
            Some((_, values)) => values.push(value),
            None => params.push((encoded_name, vec![value])),
        }
    }
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::new();
    for (i, (name, mut values)) in params.into_iter().enumerate() {
        values.sort();
        if i > 0 {
            out.push('&');
        }
        out.push_str(&name);
        out.push('=');
        for (j, value) in values.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(&encode_component(value));
        }
    }
    out
}

fn decode_component(raw: &str) -> Vec<u8> {
    let spaced = raw.replace('+', " ");
    percent_decode(spaced.as_bytes()).collect()
}

fn encode_component(bytes: &[u8]) -> String {
    // Bytes that are not UTF-8 are encoded byte-wise, exactly like the UTF-8 ones.
    match std::str::from_utf8(bytes) {
        Ok(text) => utf8_percent_encode(text, QUERY_ENCODE).to_string(),
        Err(_) => percent_encoding::percent_encode(bytes, QUERY_ENCODE).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(serde::Deserialize)]
    struct Vectors {
        cases: Vec<Case>,
    }

    #[derive(serde::Deserialize)]
    struct Case {
        method: String,
        request_target: String,
        base_path: String,
        canonical: String,
        qsh: String,
    }

    #[test]
    fn every_shared_vector_matches() {
        let vectors: Vectors =
            serde_json::from_str(include_str!("../../testdata/qsh.json")).expect("vector file");
        assert!(vectors.cases.len() >= 17);
        for case in &vectors.cases {
            let got = CanonicalRequest::new(&case.method, &case.request_target, &case.base_path);
            assert_eq!(
                got.canonical, case.canonical,
                "canonical for {}",
                case.request_target
            );
            assert_eq!(got.qsh, case.qsh, "qsh for {}", case.request_target);
        }
    }

    #[test]
    fn non_ascii_and_reserved_values_are_encoded_once() {
        let got = CanonicalRequest::new("get", "/p?q=caf%C3%A9+au+lait&tag=a%2Cb&x=*", "");
        assert_eq!(
            got.canonical,
            "GET&/p&q=caf%C3%A9%20au%20lait&tag=a%2Cb&x=%2A"
        );
    }

    #[test]
    fn base_path_is_only_stripped_on_a_segment_boundary() {
        assert_eq!(
            CanonicalRequest::new("GET", "/wikipedia/x", "/wiki").canonical,
            "GET&/wikipedia/x&"
        );
        assert_eq!(
            CanonicalRequest::new("GET", "/wiki/x", "/wiki/").canonical,
            "GET&/x&"
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_targets(method in ".{0,8}", target in ".{0,200}", base in ".{0,20}") {
            let got = CanonicalRequest::new(&method, &target, &base);
            prop_assert_eq!(got.qsh.len(), 64);
        }

        #[test]
        fn parameter_order_does_not_change_the_hash(mut pairs in proptest::collection::vec(("[a-z]{1,3}", "[a-zA-Z0-9 %,]{0,5}"), 0..6)) {
            let target = |pairs: &[(String, String)]| {
                let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", v.replace(' ', "+"))).collect();
                format!("/x?{}", q.join("&"))
            };
            let forward = qsh("GET", &target(&pairs), "");
            pairs.reverse();
            prop_assert_eq!(forward, qsh("GET", &target(&pairs), ""));
        }
    }
}
