//! Tokens as Atlassian's side makes them for requests to the app: HS256 tokens "from
//! Confluence" (webhooks, `enabled`, `disabled`), RS256 signed installs (`installed`,
//! `uninstalled`), and forged ones no honest signer would make.
//!
//! A [`Token`] starts with the claims Atlassian puts in, may have any claim or header field
//! overridden or removed (for deliberately odd tokens), and is then signed:
//!
//! ```text
//! let webhook = Token::from_confluence(client_key).for_request("POST", "/webhooks/page_created").hs256(secret)?;
//! let install = Token::signed_install(client_key, app_base_url).for_request("POST", "/lifecycle/installed").rs256(kid, pem)?;
//! let expired = Token::from_confluence(client_key).issued_at(now - 600).hs256(secret)?;
//! let alg_none = Token::from_confluence(client_key).forged("none", "");
//! ```

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Map, Value, json};
use tributary_common::connect::qsh;
use tributary_common::connect::token::now_unix;

/// How long the tokens Atlassian sends live, in seconds.
pub const DEFAULT_TTL_SECONDS: i64 = 180;

/// The `sub` of a signed install: the user who installed the app.
pub const INSTALL_USER: &str = "557058:install-user";

#[derive(Debug, thiserror::Error)]
#[error("could not sign the token: {0}")]
pub struct TokenError(#[from] jsonwebtoken::errors::Error);

/// A token being made: its claims and the header fields set beyond `alg` and `typ`.
#[derive(Debug, Clone)]
pub struct Token {
    claims: Map<String, Value>,
    header: Map<String, Value>,
    issued_at: i64,
    ttl: i64,
}

impl Token {
    /// The claims Confluence signs a webhook or a lifecycle callback with: `iss` the
    /// tenant's clientKey, `iat` now, `exp` three minutes later, an empty `context`. Add the
    /// request's qsh with [`Token::for_request`].
    pub fn from_confluence(client_key: &str) -> Token {
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(client_key));
        claims.insert("context".into(), json!({}));
        Token {
            claims,
            header: Map::new(),
            issued_at: 0,
            ttl: DEFAULT_TTL_SECONDS,
        }
        .issued_at(now_unix())
    }

    /// The claims of a signed install as Atlassian makes them: those of
    /// [`Token::from_confluence`] plus `sub` (the installing user) and `aud` (`[audience]`,
    /// the app's base URL).
    pub fn signed_install(client_key: &str, audience: &str) -> Token {
        Token::from_confluence(client_key)
            .claim("sub", INSTALL_USER)
            .claim("aud", json!([audience]))
    }

    /// Adds the qsh of `method` on `target` (path and query relative to the app's base URL).
    pub fn for_request(self, method: &str, target: &str) -> Token {
        self.claim("qsh", qsh(method, target, ""))
    }

    /// `iat` (Unix seconds), with `exp` the lifetime later.
    pub fn issued_at(mut self, unix_seconds: i64) -> Token {
        self.issued_at = unix_seconds;
        self.claims.insert("iat".into(), json!(unix_seconds));
        let ttl = self.ttl;
        self.ttl(ttl)
    }

    /// `exp` this many seconds after `iat`.
    pub fn ttl(mut self, seconds: i64) -> Token {
        self.ttl = seconds;
        self.claims
            .insert("exp".into(), json!(self.issued_at + seconds));
        self
    }

    /// Sets a claim, replacing what was there.
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Token {
        self.claims.insert(name.into(), value.into());
        self
    }

    /// Removes a claim.
    pub fn without(mut self, name: &str) -> Token {
        self.claims.remove(name);
        self
    }

    /// Sets a header field; it wins over what signing would write (`kid`, even `alg`).
    pub fn header(mut self, name: &str, value: impl Into<Value>) -> Token {
        self.header.insert(name.into(), value.into());
        self
    }

    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// Signed HS256 with a tenant's shared secret, as Confluence signs webhooks and
    /// `enabled`/`disabled`.
    pub fn hs256(&self, secret: &str) -> Result<String, TokenError> {
        self.sign(
            json!({ "alg": "HS256", "typ": "JWT" }),
            &EncodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        )
    }

    /// Signed RS256 with `private_pem` under `kid`, as Atlassian signs installs.
    pub fn rs256(&self, kid: &str, private_pem: &str) -> Result<String, TokenError> {
        self.sign(
            json!({ "alg": "RS256", "typ": "JWT", "kid": kid }),
            &EncodingKey::from_rsa_pem(private_pem.as_bytes())?,
            Algorithm::RS256,
        )
    }

    /// A token claiming `alg` with `signature` as its signature segment, whatever they are
    /// (`none` and an empty signature, a forged one).
    pub fn forged(&self, alg: &str, signature: &str) -> String {
        let header = self.header_with(json!({ "alg": alg, "typ": "JWT" }));
        format!("{}.{signature}", self.signing_input(&header))
    }

    fn header_with(&self, base: Value) -> Value {
        let mut header = match base {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        header.extend(self.header.clone());
        Value::Object(header)
    }

    fn signing_input(&self, header: &Value) -> String {
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(self.claims.clone()).to_string())
        )
    }

    // The header and claims are encoded as they are, so a test may write fields no JWT
    // library would (a numeric `kid`).
    fn sign(
        &self,
        base_header: Value,
        key: &EncodingKey,
        algorithm: Algorithm,
    ) -> Result<String, TokenError> {
        let input = self.signing_input(&self.header_with(base_header));
        let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, algorithm)?;
        Ok(format!("{input}.{signature}"))
    }
}
