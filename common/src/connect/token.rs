//! HS256 tokens: verifying the ones Confluence sends, signing the ones we send back.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde_json::{Map, Value};

use super::SharedSecret;
use super::canonical::{CONTEXT_QSH, accepted_qsh_hexes, qsh};
use super::error::AuthError;

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Longest `iss` (a clientKey or an app key) looked up anywhere. Confluence's are UUIDs.
pub const MAX_IDENTIFIER_LEN: usize = 256;

/// True for a value that can name a tenant or a key: not empty, not oversize, and free of
/// control characters (a NUL would be refused by the database, which must not turn into
/// an outage answer; the others have no business in an identifier).
pub fn is_plausible_identifier(value: &str) -> bool {
    !value.is_empty() && value.len() <= MAX_IDENTIFIER_LEN && !value.chars().any(char::is_control)
}

/// The request a token claims to be for, as this side received it.
#[derive(Debug, Clone, Copy)]
pub struct RequestTarget<'a> {
    pub method: &'a str,
    /// Path and query exactly as received.
    pub target: &'a str,
    /// Path of this side's base URL, stripped before hashing.
    pub base_path: &'a str,
}

/// Whether `qsh: "context-qsh"` (browser context tokens) is acceptable for this route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QshPolicy {
    RequestOnly,
    AllowContext,
}

/// A JWT whose header and claims were decoded but not yet trusted.
///
/// Only the claims a check reads are kept as fields; the decoded payload stays as bytes and
/// is turned into a map only for a caller that wants every claim (installs, the verified
/// claims), so a webhook builds no map of the token at all.
#[derive(Debug, Clone)]
pub struct UnverifiedToken<'a> {
    raw: &'a str,
    header_segment: &'a str,
    /// `header.payload`, what the signature covers.
    signing_input: &'a str,
    signature: &'a str,
    alg: String,
    kid: Option<String>,
    payload: Vec<u8>,
    claims: Claims,
    issuer: String,
}

/// The claims the checks read, each as a `Value` lookup would see it: `Some` only when the
/// last occurrence of the name has the expected JSON type.
#[derive(Debug, Clone, Default)]
struct Claims {
    iss: Option<String>,
    exp: Option<f64>,
    iat: Option<f64>,
    qsh: Option<String>,
}

/// The claims of a token that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    pub issuer: String,
    pub subject: Option<String>,
    pub context: Option<Value>,
    pub claims: Map<String, Value>,
}

/// A tenant's HS256 key with the HMAC's key schedule done once: every token checked with it
/// saves hashing the padded key twice. ring's SHA-256 is assembly that uses the CPU's vector
/// units where the CPU has no SHA instructions (older x86 servers, valgrind), where it took
/// two thirds of the time of the portable code per block.
#[derive(Clone)]
pub struct Hs256Key(ring::hmac::Key);

impl Hs256Key {
    pub fn new(secret: &SharedSecret) -> Self {
        Hs256Key(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            secret.expose().as_bytes(),
        ))
    }
}

impl std::fmt::Debug for Hs256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hs256Key(<redacted>)")
    }
}

impl<'a> UnverifiedToken<'a> {
    pub fn parse(raw: &'a str) -> Result<Self, AuthError> {
        let mut parts = raw.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "expected three dot-separated segments",
            ));
        };
        let signing_input = &raw[..header.len() + 1 + payload.len()];
        let header_segment = header;
        let header: lean::Header = if is_plain_hs256_header(header_segment) {
            lean::Header {
                alg: Some("HS256".to_string()),
                kid: lean::Kid::Absent,
            }
        } else {
            decode_json_object(header_segment)?
        };
        let payload = decode_segment(payload)?;
        let mut claims = match serde_json::from_slice::<lean::Object<Claims>>(&payload) {
            Ok(lean::Object(Some(claims))) => claims,
            _ => return Err(AuthError::Malformed("segment is not a JSON object")),
        };
        let alg = header
            .alg
            .ok_or(AuthError::Malformed("header has no alg"))?;
        let kid = match header.kid {
            lean::Kid::Absent => None,
            lean::Kid::String(kid) => Some(kid),
            lean::Kid::Other => return Err(AuthError::Malformed("kid is not a string")),
        };
        let issuer = claims
            .iss
            .take()
            .filter(|iss| !iss.is_empty())
            .ok_or(AuthError::Malformed("no iss claim"))?;
        if !is_plausible_identifier(&issuer) {
            return Err(AuthError::Malformed("iss is not a plausible clientKey"));
        }
        if claims.exp.is_none() {
            return Err(AuthError::Malformed("no numeric exp claim"));
        }
        Ok(UnverifiedToken {
            raw,
            header_segment,
            signing_input,
            signature,
            alg,
            kid,
            payload,
            claims,
            issuer,
        })
    }

    pub fn algorithm(&self) -> &str {
        &self.alg
    }

    pub fn key_id(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The `iss` claim: the tenant's clientKey for tokens from Confluence.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Fails unless the header names exactly `expected`.
    pub fn require_algorithm(&self, expected: Algorithm) -> Result<(), AuthError> {
        let wanted = match expected {
            Algorithm::HS256 => "HS256",
            Algorithm::RS256 => "RS256",
            _ => return Err(AuthError::UnsupportedAlgorithm(self.alg.clone())),
        };
        if self.alg == wanted {
            Ok(())
        } else {
            Err(AuthError::UnsupportedAlgorithm(self.alg.clone()))
        }
    }

    /// Checks the HMAC with `secret`, then time and qsh.
    pub fn verify_hs256(
        &self,
        secret: &SharedSecret,
        request: RequestTarget<'_>,
        policy: QshPolicy,
        now: i64,
        leeway_seconds: u64,
    ) -> Result<VerifiedToken, AuthError> {
        self.check_hs256(secret, request, policy, now, leeway_seconds)?;
        Ok(self.verified())
    }

    /// The checks of [`Self::verify_hs256`] without building the verified claims, for a
    /// caller that may check one token against more than one secret and then keeps it with
    /// [`Self::into_verified`] or [`Self::into_issuer`].
    pub fn check_hs256(
        &self,
        secret: &SharedSecret,
        request: RequestTarget<'_>,
        policy: QshPolicy,
        now: i64,
        leeway_seconds: u64,
    ) -> Result<(), AuthError> {
        self.check_hs256_keyed(&Hs256Key::new(secret), request, policy, now, leeway_seconds)
    }

    /// [`Self::check_hs256`] with a key prepared once for many tokens.
    pub fn check_hs256_keyed(
        &self,
        key: &Hs256Key,
        request: RequestTarget<'_>,
        policy: QshPolicy,
        now: i64,
        leeway_seconds: u64,
    ) -> Result<(), AuthError> {
        self.require_algorithm(Algorithm::HS256)?;
        // The steps and refusals of `jsonwebtoken::decode` (which the RS256 path still
        // uses), in its order, without its second decode of the claims and its key
        // schedule per call: the header as the library reads it, the signature, then the
        // claims segment's encoding (unpadded, as the library demands).
        let cannot_check = AuthError::Malformed("signature could not be checked");
        if !is_plain_hs256_header(self.header_segment) {
            let header = jsonwebtoken::decode_header(self.raw).map_err(|_| cannot_check.clone())?;
            if header.alg != Algorithm::HS256 {
                return Err(AuthError::UnsupportedAlgorithm(self.alg.clone()));
            }
        }
        let signature = URL_SAFE_NO_PAD
            .decode(self.signature)
            .map_err(|_| cannot_check.clone())?;
        // `verify` compares in constant time.
        ring::hmac::verify(&key.0, self.signing_input.as_bytes(), &signature)
            .map_err(|_| AuthError::BadSignature)?;
        if self.signing_input.ends_with('=') {
            return Err(cannot_check);
        }
        self.check_time_and_qsh(request, policy, now, leeway_seconds)
    }

    /// The claims of a token whose checks passed.
    pub fn into_verified(self) -> VerifiedToken {
        let claims = self.claims_map();
        VerifiedToken {
            subject: claims
                .get("sub")
                .and_then(Value::as_str)
                .map(str::to_string),
            context: claims.get("context").cloned(),
            issuer: self.issuer,
            claims,
        }
    }

    /// The issuer of a token whose checks passed, for a caller that needs nothing else.
    pub fn into_issuer(self) -> String {
        self.issuer
    }

    /// Every claim. `parse` read the same bytes as valid JSON, so this parse succeeds.
    fn claims_map(&self) -> Map<String, Value> {
        match serde_json::from_slice::<Value>(&self.payload) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }

    fn verified(&self) -> VerifiedToken {
        self.clone().into_verified()
    }

    pub(crate) fn verify_signature(
        &self,
        key: &DecodingKey,
        alg: Algorithm,
    ) -> Result<(), AuthError> {
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        // The claims were decoded by `parse` already; here they are only skipped over.
        match jsonwebtoken::decode::<serde::de::IgnoredAny>(self.raw, key, &validation) {
            Ok(_) => Ok(()),
            Err(err) => match err.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => Err(AuthError::BadSignature),
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                    Err(AuthError::UnsupportedAlgorithm(self.alg.clone()))
                }
                _ => Err(AuthError::Malformed("signature could not be checked")),
            },
        }
    }

    pub(crate) fn verify_time_and_qsh(
        &self,
        request: RequestTarget<'_>,
        policy: QshPolicy,
        now: i64,
        leeway_seconds: u64,
    ) -> Result<VerifiedToken, AuthError> {
        self.check_time_and_qsh(request, policy, now, leeway_seconds)?;
        Ok(self.verified())
    }

    fn check_time_and_qsh(
        &self,
        request: RequestTarget<'_>,
        policy: QshPolicy,
        now: i64,
        leeway_seconds: u64,
    ) -> Result<(), AuthError> {
        self.check_times(now, leeway_seconds)?;
        let claimed = self.claims.qsh.as_deref().ok_or(AuthError::MissingQsh)?;
        if claimed == CONTEXT_QSH {
            if policy != QshPolicy::AllowContext {
                return Err(AuthError::ContextQshNotAllowed);
            }
        } else {
            let accepted = accepted_qsh_hexes(request.method, request.target, request.base_path);
            // Both compared, so the time taken does not tell which form came close.
            let matches = accepted.iter().fold(false, |any, qsh| {
                constant_time_eq(claimed.as_bytes(), qsh) | any
            });
            if !matches {
                return Err(AuthError::QshMismatch);
            }
        }
        Ok(())
    }

    /// `exp` (with leeway) and, when present, `iat` against `now`.
    pub(crate) fn check_times(&self, now: i64, leeway_seconds: u64) -> Result<(), AuthError> {
        let leeway = i64::try_from(leeway_seconds).unwrap_or(i64::MAX / 4);
        let exp = self.claims.exp.unwrap_or(0.0) as i64;
        if now > exp.saturating_add(leeway) {
            return Err(AuthError::Expired);
        }
        if let Some(iat) = self.claims.iat
            && (iat as i64) > now.saturating_add(leeway)
        {
            return Err(AuthError::IssuedInFuture);
        }
        Ok(())
    }

    /// One claim, as the JSON of the payload has it.
    pub(crate) fn claim(&self, name: &str) -> Option<Value> {
        self.claims_map().remove(name)
    }
}

/// The header segments HS256 signers send (`{"alg":"HS256","typ":"JWT"}` in either order,
/// `{"alg":"HS256"}`). Both header readers are known to read them as HS256 without a `kid`,
/// so a token carrying one byte for byte is spared decoding its header twice.
const PLAIN_HS256_HEADERS: [&str; 3] = [
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9",
    "eyJhbGciOiJIUzI1NiJ9",
];

fn is_plain_hs256_header(segment: &str) -> bool {
    PLAIN_HS256_HEADERS.contains(&segment)
}

fn decode_segment(segment: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed("segment is not base64url"))
}

fn decode_json_object<T>(segment: &str) -> Result<T, AuthError>
where
    lean::Object<T>: serde::de::DeserializeOwned,
{
    let bytes = decode_segment(segment)?;
    match serde_json::from_slice::<lean::Object<T>>(&bytes) {
        Ok(lean::Object(Some(object))) => Ok(object),
        _ => Err(AuthError::Malformed("segment is not a JSON object")),
    }
}

mod lean {
    //! The token's header and claims read in one pass, without a map. Every value is
    //! visited as a `Value` parse visits it (so the same segments are refused), and a name
    //! given twice counts with its last value, as in a `Value` map.

    use std::fmt;

    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

    use super::Claims;
    use crate::envelope::subject_scan::{Key, KeySeed, Numeric, Skip, Text, scalars_are};

    /// `Some` when the segment is a JSON object.
    pub struct Object<T>(pub Option<T>);

    #[derive(Default)]
    pub struct Header {
        pub alg: Option<String>,
        pub kid: Kid,
    }

    #[derive(Default)]
    pub enum Kid {
        /// Missing or `null`.
        #[default]
        Absent,
        String(String),
        Other,
    }

    /// Fills `T` from the entries of one JSON object.
    pub trait Fields: Default {
        const NAMES: &'static [&'static str];
        fn read<'de, A: MapAccess<'de>>(
            &mut self,
            index: usize,
            map: &mut A,
        ) -> Result<(), A::Error>;
    }

    impl Fields for Header {
        const NAMES: &'static [&'static str] = &["alg", "kid"];
        fn read<'de, A: MapAccess<'de>>(
            &mut self,
            index: usize,
            map: &mut A,
        ) -> Result<(), A::Error> {
            if index == 0 {
                self.alg = map.next_value::<Text>()?.value;
            } else {
                self.kid = map.next_value::<KidValue>()?.0;
            }
            Ok(())
        }
    }

    impl Fields for Claims {
        const NAMES: &'static [&'static str] = &["iss", "exp", "iat", "qsh"];
        fn read<'de, A: MapAccess<'de>>(
            &mut self,
            index: usize,
            map: &mut A,
        ) -> Result<(), A::Error> {
            match index {
                0 => self.iss = map.next_value::<Text>()?.value,
                1 => self.exp = map.next_value::<Numeric>()?.0,
                2 => self.iat = map.next_value::<Numeric>()?.0,
                _ => self.qsh = map.next_value::<Text>()?.value,
            }
            Ok(())
        }
    }

    impl<'de, T: Fields> Deserialize<'de> for Object<T> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct V<T>(std::marker::PhantomData<T>);
            impl<'de, T: Fields> Visitor<'de> for V<T> {
                type Value = Object<T>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                scalars_are!(Object(None));
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<T>, A::Error> {
                    let mut fields = T::default();
                    while let Some(Key(index)) = map.next_key_seed(KeySeed(T::NAMES))? {
                        match index {
                            Some(index) => fields.read(index, &mut map)?,
                            None => {
                                map.next_value::<Skip>()?;
                            }
                        }
                    }
                    Ok(Object(Some(fields)))
                }
            }
            deserializer.deserialize_any(V(std::marker::PhantomData))
        }
    }

    struct KidValue(Kid);

    impl<'de> Deserialize<'de> for KidValue {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = KidValue;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_bool<E>(self, _: bool) -> Result<KidValue, E> {
                    Ok(KidValue(Kid::Other))
                }
                fn visit_i64<E>(self, _: i64) -> Result<KidValue, E> {
                    Ok(KidValue(Kid::Other))
                }
                fn visit_u64<E>(self, _: u64) -> Result<KidValue, E> {
                    Ok(KidValue(Kid::Other))
                }
                fn visit_f64<E>(self, _: f64) -> Result<KidValue, E> {
                    Ok(KidValue(Kid::Other))
                }
                fn visit_str<E>(self, kid: &str) -> Result<KidValue, E> {
                    Ok(KidValue(Kid::String(kid.to_string())))
                }
                fn visit_unit<E>(self) -> Result<KidValue, E> {
                    Ok(KidValue(Kid::Absent))
                }
                fn visit_none<E>(self) -> Result<KidValue, E> {
                    Ok(KidValue(Kid::Absent))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KidValue, A::Error> {
                    while seq.next_element::<Skip>()?.is_some() {}
                    Ok(KidValue(Kid::Other))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KidValue, A::Error> {
                    while map.next_entry::<Skip, Skip>()?.is_some() {}
                    Ok(KidValue(Kid::Other))
                }
            }
            deserializer.deserialize_any(V)
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the token from `Authorization: JWT <token>` or, failing that, a `jwt` query parameter.
pub fn extract_token<'a>(
    authorization: Option<&'a str>,
    query: Option<&'a str>,
) -> Option<std::borrow::Cow<'a, str>> {
    if let Some(value) = authorization {
        let value = value.trim();
        if let Some(token) = value
            .strip_prefix("JWT ")
            .or_else(|| value.strip_prefix("jwt "))
        {
            return Some(std::borrow::Cow::Borrowed(token.trim()));
        }
    }
    let query = query?;
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == "jwt").then(|| percent_encoding::percent_decode_str(value).decode_utf8_lossy())
    })
}

#[derive(Debug, Serialize)]
struct OutboundClaims<'a> {
    iss: &'a str,
    iat: i64,
    exp: i64,
    qsh: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<[&'a str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
}

/// A token for one outbound request: `iss` the app key, `aud` the tenant's clientKey.
#[derive(Debug, Clone, Copy)]
pub struct OutboundToken<'a> {
    pub app_key: &'a str,
    pub client_key: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub request: RequestTarget<'a>,
    pub issued_at: i64,
    pub ttl_seconds: i64,
}

impl OutboundToken<'_> {
    pub fn sign(&self, secret: &SharedSecret) -> Result<String, SignError> {
        let claims = OutboundClaims {
            iss: self.app_key,
            iat: self.issued_at,
            exp: self.issued_at + self.ttl_seconds,
            qsh: qsh(
                self.request.method,
                self.request.target,
                self.request.base_path,
            ),
            aud: self.client_key.map(|k| [k]),
            sub: self.subject,
        };
        sign_hs256(&claims, secret)
    }
}

/// Signs any claims set with HS256 and the tenant's shared secret.
pub fn sign_hs256<T: Serialize>(claims: &T, secret: &SharedSecret) -> Result<String, SignError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .map_err(|e| SignError(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
#[error("could not sign token: {0}")]
pub struct SignError(String);

#[cfg(test)]
mod tests;
