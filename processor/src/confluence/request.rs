//! One request to a tenant's Confluence, as callers describe it, and the answer.

use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ConfluenceError;

/// Everything but RFC 3986 unreserved characters is percent-encoded, in query components
/// and in path segments alike, so the qsh Confluence computes matches ours byte for byte.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A path segment (an id, a property key) encoded for use in a request path.
pub fn segment(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

/// A request relative to the tenant's base URL: `/rest/api/...` (v1) or `/api/v2/...` (v2).
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<(HeaderValue, Bytes)>,
    pub(crate) idempotent: bool,
}

/// The methods whose requests are idempotent unless declared otherwise (RFC 9110; TRACE is
/// never sent).
const IDEMPOTENT_METHODS: [Method; 5] = [
    Method::GET,
    Method::HEAD,
    Method::PUT,
    Method::DELETE,
    Method::OPTIONS,
];

impl ApiRequest {
    /// `path` is relative to the tenant's base URL and starts with `/`; dynamic segments
    /// should go through [`segment`].
    pub fn new(method: Method, path: impl Into<String>) -> ApiRequest {
        let idempotent = IDEMPOTENT_METHODS.contains(&method);
        ApiRequest {
            method,
            path: path.into(),
            query: Vec::new(),
            headers: HeaderMap::new(),
            body: None,
            idempotent,
        }
    }

    pub fn get(path: impl Into<String>) -> ApiRequest {
        ApiRequest::new(Method::GET, path)
    }

    pub fn post(path: impl Into<String>) -> ApiRequest {
        ApiRequest::new(Method::POST, path)
    }

    pub fn put(path: impl Into<String>) -> ApiRequest {
        ApiRequest::new(Method::PUT, path)
    }

    pub fn delete(path: impl Into<String>) -> ApiRequest {
        ApiRequest::new(Method::DELETE, path)
    }

    /// Adds one query parameter (unencoded; repeat a name for several values).
    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> ApiRequest {
        self.query.push((name.into(), value.into()));
        self
    }

    pub fn query_pairs<K: Into<String>, V: Into<String>>(
        mut self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> ApiRequest {
        self.query
            .extend(pairs.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// A JSON body.
    pub fn json<B: Serialize + ?Sized>(mut self, body: &B) -> Result<ApiRequest, ConfluenceError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ConfluenceError::InvalidRequest(format!("body is not JSON: {e}")))?;
        self.body = Some((
            HeaderValue::from_static("application/json"),
            Bytes::from(bytes),
        ));
        Ok(self)
    }

    /// Any other body (the escape hatch for attachments and the like).
    pub fn body(mut self, content_type: HeaderValue, bytes: impl Into<Bytes>) -> ApiRequest {
        self.body = Some((content_type, bytes.into()));
        self
    }

    /// An extra header; `Authorization` is always set by the client and cannot be replaced.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> ApiRequest {
        self.headers.insert(name, value);
        self
    }

    /// Declares whether sending this request twice is harmless, which allows retries on
    /// server errors and timeouts. GET, HEAD, PUT, DELETE, OPTIONS are by default.
    pub fn idempotent(mut self, idempotent: bool) -> ApiRequest {
        self.idempotent = idempotent;
        self
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path and query as they go on the wire below the tenant's base path.
    ///
    /// Parameters go out sorted by name and then value, and names must be unreserved ASCII:
    /// then the Java canonical form the request is signed with and the JavaScript one are
    /// the same string, whichever side checks it.
    pub(crate) fn relative_target(&self) -> Result<String, ConfluenceError> {
        check_path(&self.path)?;
        if let Some((name, _)) = self.query.iter().find(|(name, _)| {
            name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        }) {
            return Err(ConfluenceError::InvalidRequest(format!(
                "query parameter name `{name}` is not unreserved ASCII"
            )));
        }
        let mut query: Vec<&(String, String)> = self.query.iter().collect();
        query.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| a.1.encode_utf16().cmp(b.1.encode_utf16()))
        });
        let mut target = self.path.clone();
        for (i, (name, value)) in query.into_iter().enumerate() {
            target.push(if i == 0 { '?' } else { '&' });
            target.push_str(&segment(name));
            target.push('=');
            target.push_str(&segment(value));
        }
        Ok(target)
    }
}

/// Only a plain absolute path below the base URL is accepted: no scheme, no authority, no
/// query or fragment of its own, no dot segments, nothing that needs encoding. That keeps
/// every request on the tenant's own host and base path, and the signed path exactly the
/// one sent.
fn check_path(path: &str) -> Result<(), ConfluenceError> {
    let refuse = |why: &str| {
        Err(ConfluenceError::InvalidRequest(format!(
            "path `{}` {why}",
            path.escape_debug()
        )))
    };
    if !path.starts_with('/') || path.starts_with("//") {
        return refuse("must start with a single `/`");
    }
    if let Some(bad) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/-._~%!$'()*+,;=:@".contains(*c)))
    {
        return refuse(&format!(
            "contains `{}`; encode segments with `segment`",
            bad.escape_debug()
        ));
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return refuse("must not contain dot segments");
    }
    Ok(())
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ApiResponse {
    /// The body as JSON; an empty body (204) reads as JSON `null`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            serde_json::from_slice(b"null")
        } else {
            serde_json::from_slice(&self.body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_are_encoded_the_canonical_way() {
        let target = ApiRequest::get("/rest/api/content/search")
            .query("cql", "title ~ \"café, crème\"")
            .query("label", "a b")
            .query("label", "x*y")
            .relative_target()
            .expect("valid");
        assert_eq!(
            target,
            "/rest/api/content/search?cql=title%20~%20%22caf%C3%A9%2C%20cr%C3%A8me%22&label=a%20b&label=x%2Ay"
        );
    }

    #[test]
    fn both_canonical_forms_agree_on_every_query_sent() {
        use tributary_common::connect::{CanonicalForm, CanonicalRequest};
        let target = ApiRequest::get("/rest/api/content")
            .query("spaceKey", "DEV")
            .query("expand", "version")
            .query("expand", "body.storage")
            .query("expand", "\u{1F600}")
            .query("expand", "\u{FF21}")
            .relative_target()
            .expect("valid");
        let java = CanonicalRequest::in_form(CanonicalForm::Java, "GET", &target, "");
        let js = CanonicalRequest::in_form(CanonicalForm::JavaScript, "GET", &target, "");
        assert_eq!(java.canonical, js.canonical);
        assert!(
            ApiRequest::get("/rest/api/content")
                .query("caf\u{e9}", "x")
                .relative_target()
                .is_err()
        );
        assert!(
            ApiRequest::get("/rest/api/content")
                .query("a/b", "x")
                .relative_target()
                .is_err()
        );
    }

    #[test]
    fn paths_that_could_leave_the_tenant_are_refused() {
        for path in [
            "http://evil.example/rest",
            "//evil.example/rest",
            "rest/api/content",
            "/rest/../../other",
            "/rest/api/content?x=1",
            "/rest/api/content#frag",
            "/rest/api/con tent",
            "/rest/api/café",
            "/rest\\api",
        ] {
            assert!(
                matches!(
                    ApiRequest::get(path).relative_target(),
                    Err(ConfluenceError::InvalidRequest(_))
                ),
                "{path} should be refused"
            );
        }
        assert_eq!(
            ApiRequest::get(format!(
                "/rest/api/content/{}/property/{}",
                segment("12"),
                segment("my key/é")
            ))
            .relative_target()
            .expect("valid"),
            "/rest/api/content/12/property/my%20key%2F%C3%A9"
        );
    }

    #[test]
    fn empty_answers_read_as_null() {
        let answer = ApiResponse {
            status: 204,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        };
        answer.json::<()>().expect("null reads as unit");
        let value: serde_json::Value = answer.json().expect("null");
        assert!(value.is_null());
    }

    #[test]
    fn idempotency_follows_the_method_unless_declared() {
        assert!(ApiRequest::get("/x").idempotent);
        assert!(ApiRequest::put("/x").idempotent);
        assert!(!ApiRequest::post("/x").idempotent);
        assert!(ApiRequest::post("/x").idempotent(true).idempotent);
    }
}
