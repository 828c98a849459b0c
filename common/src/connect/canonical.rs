//! Canonical request and query string hash (qsh), as Connect defines them.
//!
//! The canonical string is `METHOD&PATH&QUERY`; the qsh is the lowercase hex SHA-256 of it.
//! Both sides of a Connect exchange must compute it byte for byte alike, so the rules here
//! follow Atlassian's libraries rather than any general URL normalisation.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, utf8_percent_encode};

/// Everything but RFC 3986 unreserved characters is percent-encoded.
const QUERY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The literal qsh browser context tokens carry instead of a request hash.
pub const CONTEXT_QSH: &str = "context-qsh";

/// The two orders Atlassian's libraries put query parameters in; they agree unless a name
/// is not ASCII or a repeated name's values arrive unsorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanonicalForm {
    /// `com.atlassian.jwt.core.CanonicalHttpRequests`, what Confluence signs and verifies
    /// with: parameters sorted by `enc(name) + " " + enc(values joined by ",")`, each name's
    /// values in request order.
    Java,
    /// `atlassian-jwt` (atlassian-connect-express): decoded names sorted in UTF-16 order,
    /// each name's values sorted.
    JavaScript,
}

/// The canonical form of one request and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalRequest {
    pub canonical: String,
    pub qsh: String,
}

impl CanonicalRequest {
    /// The Java form, the one outbound requests are signed with.
    ///
    /// `request_target` is the path and query exactly as received (or as it will be sent);
    /// `base_path` is the path of the receiving side's base URL (`""` or e.g. `/wiki`).
    pub fn new(method: &str, request_target: &str, base_path: &str) -> Self {
        Self::in_form(CanonicalForm::Java, method, request_target, base_path)
    }

    pub fn in_form(
        form: CanonicalForm,
        method: &str,
        request_target: &str,
        base_path: &str,
    ) -> Self {
        let canonical = canonical_string(form, method, request_target, base_path);
        let qsh = hash(&canonical);
        CanonicalRequest { canonical, qsh }
    }
}

fn canonical_string(
    form: CanonicalForm,
    method: &str,
    request_target: &str,
    base_path: &str,
) -> String {
    let (path, query) = split_target(request_target);
    // Most requests (every webhook) have no query: their canonical form is built in one
    // buffer, without the parameter machinery's allocations.
    if query.is_empty() {
        return canonical_string_without_query(method, path, base_path);
    }
    general_canonical_string(form, method, path, query, base_path)
}

fn split_target(request_target: &str) -> (&str, &str) {
    match request_target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (request_target, ""),
    }
}

fn general_canonical_string(
    form: CanonicalForm,
    method: &str,
    path: &str,
    query: &str,
    base_path: &str,
) -> String {
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        canonical_path(path, base_path),
        canonical_query(query, form)
    )
}

/// `METHOD&PATH&` as [`general_canonical_string`] builds it for an empty query.
fn canonical_string_without_query(method: &str, path: &str, base_path: &str) -> String {
    let relative = relative_path(path, base_path);
    let mut out = String::with_capacity(method.len() + relative.len() + 3);
    out.push_str(method);
    out.make_ascii_uppercase();
    out.push('&');
    let path_start = out.len();
    if !relative.starts_with('/') {
        out.push('/');
    }
    let mut pieces = relative.split('&');
    if let Some(first) = pieces.next() {
        out.push_str(first);
    }
    for piece in pieces {
        out.push_str("%26");
        out.push_str(piece);
    }
    // `%26` never ends in `/`, so trimming after the replacement trims what
    // `canonical_path` trims before it.
    if out.len() - path_start > 1 && out.ends_with('/') {
        out.pop();
    }
    out.push('&');
    out
}

/// SHA-256 by ring, whose assembly uses the CPU's vector units where it has no SHA
/// instructions (older x86 servers, valgrind); the portable code it replaces took about half
/// as long again per block there.
fn sha256(canonical: &str) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes())
}

fn hash(canonical: &str) -> String {
    hex::encode(sha256(canonical))
}

/// A qsh as lowercase hex, on the stack.
pub(crate) type QshHex = [u8; 64];

fn hash_hex(canonical: &str) -> QshHex {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = sha256(canonical);
    let mut out = [0u8; 64];
    for (pair, byte) in out.chunks_exact_mut(2).zip(digest.as_ref()) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
    out
}

/// Shorthand for the hash alone, in the Java form (what outbound requests are signed with).
pub fn qsh(method: &str, request_target: &str, base_path: &str) -> String {
    CanonicalRequest::new(method, request_target, base_path).qsh
}

/// The hashes of a received request in both forms: a token is good if its qsh matches
/// either (Confluence signs with the Java one, atlassian-connect-express with the other).
pub fn accepted_qshes(method: &str, request_target: &str, base_path: &str) -> [String; 2] {
    accepted_qsh_hexes(method, request_target, base_path)
        .map(|hex| hex.iter().map(|&digit| char::from(digit)).collect())
}

/// [`accepted_qshes`] without an allocation per hash, for the check of every request.
pub(crate) fn accepted_qsh_hexes(
    method: &str,
    request_target: &str,
    base_path: &str,
) -> [QshHex; 2] {
    let java = canonical_string(CanonicalForm::Java, method, request_target, base_path);
    let java_qsh = hash_hex(&java);
    // Without a query both forms are `METHOD&PATH&` (most webhooks): the second is neither
    // built nor hashed.
    if split_target(request_target).1.is_empty() {
        return [java_qsh, java_qsh];
    }
    let javascript = canonical_string(CanonicalForm::JavaScript, method, request_target, base_path);
    // The forms differ only for unusual queries: the same string needs hashing once.
    let javascript_qsh = if javascript == java {
        java_qsh
    } else {
        hash_hex(&javascript)
    };
    [java_qsh, javascript_qsh]
}

/// `path` with the base path taken off, when it starts with it on a segment boundary.
fn relative_path<'a>(path: &'a str, base_path: &str) -> &'a str {
    let base = base_path.trim_end_matches('/');
    match path.strip_prefix(base) {
        Some(rest) if !base.is_empty() && (rest.is_empty() || rest.starts_with('/')) => rest,
        _ => path,
    }
}

fn canonical_path(path: &str, base_path: &str) -> String {
    let relative = relative_path(path, base_path);
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

/// JavaScript compares strings by UTF-16 code units; bytes that are not UTF-8 keep their
/// byte order.
fn utf16_key(bytes: &[u8]) -> Vec<u16> {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.encode_utf16().collect(),
        Err(_) => bytes.iter().map(|b| u16::from(*b)).collect(),
    }
}

fn canonical_query(query: &str, form: CanonicalForm) -> String {
    // Names and values are compared as decoded bytes so that invalid UTF-8 cannot fail the
    // hash; they are re-encoded the one canonical way before joining.
    let mut params: Vec<(Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode_component(raw_name);
        if name == b"jwt" {
            continue;
        }
        let value = decode_component(raw_value);
        match params.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => params.push((name, vec![value])),
        }
    }
    let mut encoded: Vec<(String, String)> = match form {
        CanonicalForm::Java => {
            let mut keyed: Vec<(String, String, String)> = params
                .into_iter()
                .map(|(name, values)| {
                    let name = encode_component(&name);
                    let joined = values.join(&b","[..]);
                    let key = format!("{name} {}", encode_component(&joined));
                    (key, name, join_encoded(&values))
                })
                .collect();
            keyed.sort_by(|a, b| a.0.cmp(&b.0));
            keyed
                .into_iter()
                .map(|(_, name, values)| (name, values))
                .collect()
        }
        CanonicalForm::JavaScript => {
            params.sort_by_key(|p| utf16_key(&p.0));
            params
                .into_iter()
                .map(|(name, mut values)| {
                    values.sort_by_key(|v| utf16_key(v));
                    (encode_component(&name), join_encoded(&values))
                })
                .collect()
        }
    };
    let mut out = String::new();
    for (i, (name, values)) in encoded.drain(..).enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&name);
        out.push('=');
        out.push_str(&values);
    }
    out
}

fn join_encoded(values: &[Vec<u8>]) -> String {
    values
        .iter()
        .map(|v| encode_component(v))
        .collect::<Vec<_>>()
        .join(",")
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
        /// The JavaScript form.
        canonical: String,
        qsh: String,
        /// The Java form, where it differs.
        #[serde(default)]
        canonical_java: Option<String>,
        #[serde(default)]
        qsh_java: Option<String>,
    }

    #[test]
    fn every_shared_vector_matches() {
        let vectors: Vectors =
            serde_json::from_str(include_str!("../../testdata/qsh.json")).expect("vector file");
        assert!(vectors.cases.len() >= 17);
        let mut differing = 0;
        for case in &vectors.cases {
            let got = CanonicalRequest::in_form(
                CanonicalForm::JavaScript,
                &case.method,
                &case.request_target,
                &case.base_path,
            );
            assert_eq!(
                got.canonical, case.canonical,
                "canonical for {}",
                case.request_target
            );
            assert_eq!(got.qsh, case.qsh, "qsh for {}", case.request_target);
            let java = CanonicalRequest::new(&case.method, &case.request_target, &case.base_path);
            if case.canonical_java.is_some() {
                differing += 1;
            }
            assert_eq!(
                &java.canonical,
                case.canonical_java.as_ref().unwrap_or(&case.canonical),
                "Java canonical for {}",
                case.request_target
            );
            assert_eq!(
                &java.qsh,
                case.qsh_java.as_ref().unwrap_or(&case.qsh),
                "Java qsh for {}",
                case.request_target
            );
            assert!(
                accepted_qshes(&case.method, &case.request_target, &case.base_path)
                    .contains(&case.qsh)
            );
        }
        assert!(differing >= 3, "vectors where the two forms differ");
    }

    #[test]
    fn the_forms_differ_only_in_order() {
        let target = "/x?z=1&%C3%A9=2&r=b&r=a";
        assert_eq!(
            CanonicalRequest::new("GET", target, "").canonical,
            "GET&/x&%C3%A9=2&r=b,a&z=1"
        );
        assert_eq!(
            CanonicalRequest::in_form(CanonicalForm::JavaScript, "GET", target, "").canonical,
            "GET&/x&r=a,b&z=1&%C3%A9=2"
        );
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

    #[test]
    fn targets_without_a_query_build_what_the_general_path_builds() {
        let methods = ["POST", "get", "pAtCh", "", "é&x", "p\u{0}st"];
        let paths = [
            "",
            "/",
            "//",
            "/webhooks/page_created",
            "/webhooks/page_created/",
            "a",
            "a/",
            "&",
            "/&",
            "/a&b&&c/",
            "&/",
            "/wiki",
            "/wiki/",
            "/wiki/x/",
            "/wikipedia/x",
            "/wiki&/x",
            "/é/ü/",
            "%26/x",
            "?",
            "/x?",
        ];
        let bases = ["", "/", "/wiki", "/wiki/", "wiki", "/wiki//", "/é", "&"];
        for method in methods {
            for target in paths {
                for base in bases {
                    let (path, query) = split_target(target);
                    if !query.is_empty() {
                        continue;
                    }
                    let general =
                        general_canonical_string(CanonicalForm::Java, method, path, "", base);
                    assert_eq!(
                        canonical_string_without_query(method, path, base),
                        general,
                        "{method:?} {target:?} {base:?}"
                    );
                    for form in [CanonicalForm::Java, CanonicalForm::JavaScript] {
                        assert_eq!(canonical_string(form, method, target, base), general);
                    }
                }
            }
        }
    }

    #[test]
    fn the_hex_hash_is_the_string_hash() {
        for canonical in ["", "POST&/webhooks/page_created&", "GET&/x&a=1&b=%C3%A9"] {
            assert_eq!(hash_hex(canonical).as_slice(), hash(canonical).as_bytes());
        }
    }

    proptest! {
        #[test]
        fn a_target_without_a_query_builds_what_the_general_path_builds(method in ".{0,8}", path in "[^?]{0,60}", base in ".{0,20}", mark in proptest::bool::ANY) {
            let target = if mark { format!("{path}?") } else { path.clone() };
            let general = general_canonical_string(CanonicalForm::Java, &method, &path, "", &base);
            prop_assert_eq!(canonical_string(CanonicalForm::Java, &method, &target, &base), general.clone());
            prop_assert_eq!(canonical_string(CanonicalForm::JavaScript, &method, &target, &base), general);
        }

        #[test]
        fn a_slash_and_ampersand_heavy_path_builds_what_the_general_path_builds(method in "[a-zA-Z&]{0,6}", path in "[/&a]{0,12}", base in "[/&a]{0,6}") {
            prop_assert_eq!(
                canonical_string_without_query(&method, &path, &base),
                general_canonical_string(CanonicalForm::Java, &method, &path, "", &base)
            );
        }

        #[test]
        fn never_panics_on_arbitrary_targets(method in ".{0,8}", target in ".{0,200}", base in ".{0,20}") {
            let got = CanonicalRequest::new(&method, &target, &base);
            prop_assert_eq!(got.qsh.len(), 64);
        }

        #[test]
        fn accepted_hashes_are_the_two_forms(target in "/[a-z/]{0,12}(\\?([a-z]{1,2}(=[a-z,]{0,3})?&?){0,3})?") {
            let both = [CanonicalForm::Java, CanonicalForm::JavaScript]
                .map(|form| CanonicalRequest::in_form(form, "POST", &target, "").qsh);
            prop_assert_eq!(accepted_qshes("POST", &target, ""), both);
        }

        #[test]
        fn parameter_order_does_not_change_the_hash(mut pairs in proptest::collection::vec(("[a-z]{1,3}", "[a-zA-Z0-9 %,]{0,5}"), 0..6)) {
            let target = |pairs: &[(String, String)]| {
                let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", v.replace(' ', "+"))).collect();
                format!("/x?{}", q.join("&"))
            };
            let js = |t: &str| CanonicalRequest::in_form(CanonicalForm::JavaScript, "GET", t, "").qsh;
            let forward = js(&target(&pairs));
            pairs.reverse();
            prop_assert_eq!(forward, js(&target(&pairs)));
        }

        #[test]
        fn the_order_of_distinct_names_does_not_change_the_java_hash(names in proptest::collection::btree_set("[a-zA-Z0-9._~-]{1,4}|%C3%A9[a-z]?", 0..6)) {
            let pairs: Vec<String> = names.iter().enumerate().map(|(i, n)| format!("{n}={i}")).collect();
            let forward = qsh("GET", &format!("/x?{}", pairs.join("&")), "");
            let reversed: Vec<String> = pairs.into_iter().rev().collect();
            prop_assert_eq!(forward, qsh("GET", &format!("/x?{}", reversed.join("&")), ""));
        }
    }
}
