//! The hostile-request corpus (`tests/corpus/hostile.json`): each case describes a request
//! declaratively (tokens are signed when the case runs, so they are fresh and carry the
//! tenants of that run) and the answer the ingest documents for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tributary_common::connect::token::now_unix;
use tributary_common::connect::{CanonicalForm, CanonicalRequest};
use tributary_devkit::harness::{APP_BASE_URL, APP_KEY, Ingest, KID, Raw, Tenant};
use tributary_devkit::token::INSTALL_USER;
use tributary_devkit::{INSTALL_KEY_1, INSTALL_KEY_2, INSTALL_PUB_1, Token};

#[derive(Debug, Deserialize)]
pub struct Corpus {
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    /// Which kind of attack or mistake this is (forged, expired, alg_none, ...).
    pub kind: String,
    #[serde(default = "post")]
    pub method: String,
    pub path: String,
    /// A query string (without `?`); `{token}` is replaced by the signed token.
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub token: Option<TokenSpec>,
    #[serde(default)]
    pub body: Option<BodySpec>,
    /// Extra headers; `null` removes a default one (`content-type`).
    #[serde(default)]
    pub headers: Map<String, Value>,
    /// A header whose value is this many bytes of `a`.
    #[serde(default)]
    pub huge_header: Option<usize>,
    /// This many extra small headers.
    #[serde(default)]
    pub many_headers: Option<usize>,
    /// Send the body slowly over a raw connection.
    #[serde(default)]
    pub slow_body: Option<SlowBody>,
    /// Send the headers slowly over a raw connection, never finishing them.
    #[serde(default)]
    pub slow_head: Option<SlowHead>,
    /// Sent to an ingest with legacy (unsigned) installs allowed.
    #[serde(default)]
    pub legacy: bool,
    /// Sent this many times at once; every answer must be the documented one.
    #[serde(default)]
    pub concurrent: Option<usize>,
    /// The dedicated test that shows what a single request cannot (a race's one winner,
    /// say); documentation only.
    #[serde(default)]
    pub see: Option<String>,
    pub expect: Expect,
}

fn post() -> String {
    "POST".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// A literal token, used as it is.
    pub raw: Option<String>,
    /// A junk token of this many bytes.
    pub raw_length: Option<usize>,
    /// `HS256` (signed with `secret`), `RS256` (signed with `key`), anything else forged.
    pub alg: Option<String>,
    /// The tenant (`known`, `gone`, `stranger`, `newcomer`, `other`) or `lit:<iss>`.
    pub iss: Option<String>,
    /// The tenant whose secret signs, `lit:<secret>`, or `install-public-key`.
    pub secret: Option<String>,
    /// `install-1` or `install-2`.
    pub key: Option<String>,
    pub kid: Option<String>,
    /// `app` for the app base URL, or a literal audience.
    pub aud: Option<String>,
    /// The request the qsh is computed for (`METHOD target`), a literal (`lit:<qsh>`),
    /// `omit`, or `java` / `javascript` for the request sent in that Atlassian canonical
    /// form (they differ for repeated parameters out of order and non-ASCII names); by
    /// default the request sent.
    pub qsh: Option<String>,
    /// Seconds added to now for `iat`.
    #[serde(default)]
    pub iat: i64,
    pub ttl: Option<i64>,
    /// Claims merged last; `null` removes one.
    #[serde(default)]
    pub claims: Map<String, Value>,
    /// Header fields merged into a forged token's header.
    #[serde(default)]
    pub header: Map<String, Value>,
    /// The signature segment of a forged token.
    pub signature: Option<String>,
    /// `authorization` (default), `query` (the `jwt` parameter), `bearer`, `bare`.
    pub placement: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodySpec {
    /// JSON; strings like `{known.clientKey}` are filled in.
    pub json: Option<Value>,
    /// A lifecycle body of this tenant...
    pub lifecycle: Option<String>,
    /// ... with this eventType ...
    pub event_type: Option<String>,
    /// ... these fields set ...
    #[serde(default)]
    pub set: Map<String, Value>,
    /// ... and these removed.
    #[serde(default)]
    pub remove: Vec<String>,
    pub text: Option<String>,
    pub base64: Option<String>,
    /// `unit` repeated `times` times.
    pub repeat: Option<String>,
    pub times: Option<usize>,
    /// `prefix` + `open` x depth + `close` x depth + `suffix`.
    pub depth: Option<usize>,
    pub open: Option<String>,
    pub close: Option<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowBody {
    pub declared_length: usize,
    pub bytes_per_tick: usize,
    pub tick_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowHead {
    /// Header bytes dribbled after the request line, at most.
    pub length: usize,
    pub bytes_per_tick: usize,
    pub tick_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub status: Option<u16>,
    /// The `error` code; `null` when the answer has no JSON body (the HTTP server itself
    /// refused the request).
    pub code: Option<String>,
    /// The server closes the connection (with or without an answer first).
    #[serde(default)]
    pub closed: bool,
    /// Closing the connection without an answer is as good as the answer (the HTTP server
    /// may refuse before or while reading what it is sent).
    #[serde(default)]
    pub or_closed: bool,
    /// Install-key fetches the case may cost the first time it is sent (the runner counts
    /// them at the world's key server).
    #[serde(default)]
    pub key_fetches: Option<usize>,
}

impl Corpus {
    pub fn load() -> Corpus {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/hostile.json");
        let text = std::fs::read_to_string(&path).expect("read the hostile corpus");
        serde_json::from_str(&text).expect("the hostile corpus is valid")
    }
}

/// The tenants a corpus run refers to by name.
pub struct Cast {
    pub tenants: HashMap<&'static str, Tenant>,
}

impl Cast {
    fn tenant(&self, name: &str) -> &Tenant {
        self.tenants
            .get(name)
            .unwrap_or_else(|| panic!("the corpus names an unknown tenant `{name}`"))
    }

    fn fill(&self, value: &Value) -> Value {
        match value {
            Value::String(text) => Value::String(self.fill_text(text)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.fill(v)).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), self.fill(v))).collect())
            }
            other => other.clone(),
        }
    }

    fn fill_text(&self, text: &str) -> String {
        let mut out = text
            .replace("{app.key}", APP_KEY)
            .replace("{app.baseUrl}", APP_BASE_URL);
        for (name, tenant) in &self.tenants {
            out = out
                .replace(&format!("{{{name}.clientKey}}"), &tenant.client_key)
                .replace(&format!("{{{name}.baseUrl}}"), &tenant.base_url)
                .replace(&format!("{{{name}.pageId}}"), &tenant.page_id);
        }
        out
    }
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Option<u16>,
    pub code: Option<String>,
    pub closed: bool,
}

impl Case {
    fn body(&self, cast: &Cast) -> Vec<u8> {
        let Some(spec) = &self.body else {
            return cast.tenant("known").page_event(1);
        };
        if let Some(json) = &spec.json {
            return cast.fill(json).to_string().into_bytes();
        }
        if let Some(tenant) = &spec.lifecycle {
            let event_type = spec.event_type.as_deref().unwrap_or("installed");
            let mut body = cast.tenant(tenant).lifecycle_body(event_type);
            if let Some(map) = body.as_object_mut() {
                for (key, value) in &spec.set {
                    map.insert(key.clone(), cast.fill(value));
                }
                for key in &spec.remove {
                    map.remove(key);
                }
            }
            return body.to_string().into_bytes();
        }
        if let Some(text) = &spec.text {
            return cast.fill_text(text).into_bytes();
        }
        if let Some(encoded) = &spec.base64 {
            return base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .expect("the corpus base64 is valid");
        }
        if let (Some(unit), Some(times)) = (&spec.repeat, spec.times) {
            return unit.repeat(times).into_bytes();
        }
        if let Some(depth) = spec.depth {
            let open = spec.open.as_deref().unwrap_or("[");
            let close = spec.close.as_deref().unwrap_or("]");
            let mut out = spec.prefix.clone().unwrap_or_default();
            out.push_str(&open.repeat(depth));
            out.push_str(&close.repeat(depth));
            out.push_str(spec.suffix.as_deref().unwrap_or_default());
            return out.into_bytes();
        }
        panic!("case `{}` has a body of no known shape", self.name);
    }

    fn token(&self, cast: &Cast, spec: &TokenSpec, target: &str) -> String {
        if let Some(raw) = &spec.raw {
            return cast.fill_text(raw);
        }
        if let Some(length) = spec.raw_length {
            return "x".repeat(length);
        }
        let alg = spec.alg.as_deref().unwrap_or("HS256");
        let issuer = match spec.iss.as_deref().unwrap_or("known") {
            lit if lit.starts_with("lit:") => lit.trim_start_matches("lit:").to_string(),
            name => cast.tenant(name).client_key.clone(),
        };
        let mut token = Token::from_confluence(&issuer)
            .issued_at(now_unix() + spec.iat)
            .ttl(spec.ttl.unwrap_or(180));
        token = match spec.qsh.as_deref() {
            None => token.for_request(&self.method, target),
            Some("omit") => token,
            Some(form @ ("java" | "javascript")) => {
                let form = if form == "java" {
                    CanonicalForm::Java
                } else {
                    CanonicalForm::JavaScript
                };
                token.claim(
                    "qsh",
                    CanonicalRequest::in_form(form, &self.method, target, "").qsh,
                )
            }
            Some(lit) if lit.starts_with("lit:") => {
                token.claim("qsh", lit.trim_start_matches("lit:"))
            }
            Some(request) => {
                let (method, other) = request
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("case `{}`: qsh is `METHOD target`", self.name));
                token.for_request(method, &cast.fill_text(other))
            }
        };
        token = match spec.aud.as_deref() {
            Some("app") => token.claim("aud", json!([APP_BASE_URL])),
            Some(aud) => token.claim("aud", json!([cast.fill_text(aud)])),
            None if alg == "RS256" => token.claim("aud", json!([APP_BASE_URL])),
            None => token,
        };
        if alg == "RS256" {
            token = token.claim("sub", INSTALL_USER);
        }
        for (key, value) in &spec.claims {
            token = if value.is_null() {
                token.without(key)
            } else {
                token.claim(key, cast.fill(value))
            };
        }
        for (key, value) in &spec.header {
            token = token.header(key, value.clone());
        }
        match alg {
            "HS256" if spec.header.is_empty() => {
                let secret = match spec.secret.as_deref() {
                    None => match spec.iss.as_deref().unwrap_or("known") {
                        lit if lit.starts_with("lit:") => "a-secret-nobody-has".to_string(),
                        name => cast.tenant(name).secret.clone(),
                    },
                    Some("install-public-key") => INSTALL_PUB_1.to_string(),
                    Some(lit) if lit.starts_with("lit:") => lit.trim_start_matches("lit:").into(),
                    Some(name) => cast.tenant(name).secret.clone(),
                };
                if let Some(kid) = &spec.kid {
                    token = token.header("kid", kid.as_str());
                }
                token.hs256(&secret).expect("sign HS256")
            }
            "RS256" => {
                let pem = match spec.key.as_deref() {
                    Some("install-2") => INSTALL_KEY_2,
                    _ => INSTALL_KEY_1,
                };
                token
                    .rs256(spec.kid.as_deref().unwrap_or(KID), pem)
                    .expect("sign RS256")
            }
            forged => token.forged(forged, spec.signature.as_deref().unwrap_or("c2lnbmF0dXJl")),
        }
    }

    /// Builds the request of this case for this run's tenants.
    pub fn request(&self, cast: &Cast) -> Raw {
        let mut target = self.path.clone();
        let placement = self
            .token
            .as_ref()
            .and_then(|t| t.placement.clone())
            .unwrap_or_else(|| "authorization".into());
        let query = self.query.clone().map(|q| cast.fill_text(&q));
        // The qsh covers the query as sent, without the jwt parameter.
        let signed_target = match &query {
            Some(q) => format!(
                "{target}?{}",
                q.replace("jwt={token}", "").trim_matches('&')
            ),
            None => target.clone(),
        };
        let signed_target = signed_target.trim_end_matches('?').to_string();
        let token = self
            .token
            .as_ref()
            .map(|spec| self.token(cast, spec, &signed_target));
        if let Some(q) = &query {
            target = format!(
                "{target}?{}",
                q.replace("{token}", token.as_deref().unwrap_or(""))
            );
        } else if placement == "query" {
            target = format!("{target}?jwt={}", token.as_deref().unwrap_or(""));
        }
        let mut raw = Raw::post_bytes(&target, self.body(cast));
        raw.method = self.method.parse().expect("a method");
        if let Some(token) = &token {
            raw = match placement.as_str() {
                "authorization" => raw.token(token),
                "bearer" => raw.header("authorization", &format!("Bearer {token}")),
                "bare" => raw.header("authorization", token),
                _ => raw,
            };
        }
        for (name, value) in &self.headers {
            raw = match value {
                Value::Null => raw.without_header(name),
                Value::String(text) => raw.header(name, &cast.fill_text(text)),
                other => raw.header(name, &other.to_string()),
            };
        }
        if let Some(size) = self.huge_header {
            raw = raw.header("x-padding", &"a".repeat(size));
        }
        if let Some(count) = self.many_headers {
            for i in 0..count {
                raw.headers.push((format!("x-extra-{i}"), "1".into()));
            }
        }
        raw
    }

    /// Sends the case ([`Case::concurrent`] copies at once) and reads what came back.
    pub async fn run_all(&self, ingest: &Ingest, cast: &Cast) -> Vec<Outcome> {
        let copies = self.concurrent.unwrap_or(1).max(1);
        futures::future::join_all((0..copies).map(|_| self.run(ingest, cast))).await
    }

    /// Sends the case once and reads what came back.
    pub async fn run(&self, ingest: &Ingest, cast: &Cast) -> Outcome {
        // A connection of its own per case: a case the ingest answers by closing (an
        // oversize body) must not leave a dead pooled connection for the next case.
        let request = self.request(cast).header("connection", "close");
        if let Some(slow) = &self.slow_body {
            return send_slowly(ingest.addr, &request, slow).await;
        }
        if let Some(slow) = &self.slow_head {
            return send_head_slowly(ingest.addr, &request, slow).await;
        }
        match ingest.try_send(&request).await {
            Ok(answer) => Outcome {
                status: Some(answer.status().as_u16()),
                code: Some(answer.code()).filter(|c| !c.is_empty()),
                closed: false,
            },
            Err(_) => Outcome {
                status: None,
                code: None,
                closed: true,
            },
        }
    }

    /// Whether `outcome` is what this case documents.
    pub fn matches(&self, outcome: &Outcome) -> bool {
        if self.expect.closed {
            // A closed connection, possibly after an answer with the expected status.
            let answered_as_documented = outcome.status == self.expect.status
                && (self.expect.code.is_none() || outcome.code == self.expect.code);
            return outcome.closed && (outcome.status.is_none() || answered_as_documented);
        }
        if self.expect.or_closed && outcome.closed && outcome.status.is_none() {
            return true;
        }
        outcome.status == self.expect.status && outcome.code == self.expect.code
    }
}

/// Sends the head of `request` declaring `declared_length` bytes of body, then dribbles
/// the body; reports whether the server closed the connection (and what it answered) before
/// the body was complete.
async fn send_slowly(addr: SocketAddr, request: &Raw, slow: &SlowBody) -> Outcome {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return Outcome {
            status: None,
            code: None,
            closed: true,
        };
    };
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\n",
        request.method, request.target
    );
    for (name, value) in &request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", slow.declared_length));
    let _ = stream.write_all(head.as_bytes()).await;
    let (mut reader, mut writer) = stream.into_split();
    let (bytes_per_tick, tick, total) = (
        slow.bytes_per_tick.max(1),
        Duration::from_millis(slow.tick_ms),
        slow.declared_length,
    );
    let writing = tokio::spawn(async move {
        let mut sent = 0;
        while sent < total {
            let n = bytes_per_tick.min(total - sent);
            if writer.write_all(&vec![b' '; n]).await.is_err() {
                return false;
            }
            sent += n;
            tokio::time::sleep(tick).await;
        }
        true
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let started = Instant::now();
    // Sending the whole body would take declared_length / bytes_per_tick ticks; the server
    // must give up long before.
    let patience = tick * u32::try_from(total / bytes_per_tick).unwrap_or(u32::MAX);
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(1), reader.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            Err(_) if started.elapsed() > patience => break false,
            Err(_) => {}
        }
    };
    writing.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    let code = text
        .find("\r\n\r\n")
        .and_then(|at| serde_json::from_str::<Value>(&text[at + 4..]).ok())
        .and_then(|v| v["error"].as_str().map(str::to_string));
    Outcome {
        status,
        code,
        closed,
    }
}

/// Sends the request line of `request`, then dribbles one never-ending header; reports
/// whether the server closed the connection before the header could have been finished.
async fn send_head_slowly(addr: SocketAddr, request: &Raw, slow: &SlowHead) -> Outcome {
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return Outcome {
            status: None,
            code: None,
            closed: true,
        };
    };
    let (mut reader, mut writer) = stream.into_split();
    let line = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ",
        request.method, request.target
    );
    let (bytes_per_tick, tick, total) = (
        slow.bytes_per_tick.max(1),
        Duration::from_millis(slow.tick_ms),
        slow.length,
    );
    let writing = tokio::spawn(async move {
        if writer.write_all(line.as_bytes()).await.is_err() {
            return;
        }
        let mut sent = 0;
        while sent < total {
            let n = bytes_per_tick.min(total - sent);
            if writer.write_all(&vec![b'a'; n]).await.is_err() {
                return;
            }
            sent += n;
            tokio::time::sleep(tick).await;
        }
    });
    let patience = tick * u32::try_from(total / bytes_per_tick).unwrap_or(u32::MAX);
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(1), reader.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            Err(_) if started.elapsed() > patience => break false,
            Err(_) => {}
        }
    };
    writing.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    Outcome {
        status: text.split_whitespace().nth(1).and_then(|s| s.parse().ok()),
        code: None,
        closed,
    }
}
