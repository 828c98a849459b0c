use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use tributary_devkit::{INSTALL_KEY_1, Token};

const SECRET: &str = "tenant-secret-0123456789";
const WEBHOOK: RequestTarget<'static> = RequestTarget {
    method: "POST",
    target: "/webhooks/page_created?user_id=abc",
    base_path: "",
};

/// An HS256 token from `client_key` for `request`, issued at `issued_at`.
fn sign_from_confluence(
    client_key: &str,
    secret: &str,
    request: RequestTarget<'_>,
    issued_at: i64,
    ttl_seconds: i64,
) -> String {
    Token::from_confluence(client_key)
        .for_request(request.method, request.target)
        .issued_at(issued_at)
        .ttl(ttl_seconds)
        .hs256(secret)
        .expect("sign")
}

fn secrets() -> HashMap<String, SharedSecret> {
    HashMap::from([("tenant-a".to_string(), SharedSecret::new(SECRET))])
}

/// The calls the ingest makes on a request from Confluence, in the order the protocol
/// prescribes: decode untrusted, require HS256, find the tenant by `iss`, check the HMAC,
/// then time and qsh.
async fn verify(token: &str, policy: QshPolicy, leeway: u64) -> Result<VerifiedToken, AuthError> {
    let token = UnverifiedToken::parse(token)?;
    token.require_algorithm(Algorithm::HS256)?;
    let secret = secrets()
        .remove(token.issuer())
        .ok_or(AuthError::UnknownIssuer)?;
    token.verify_hs256(&secret, WEBHOOK, policy, now_unix(), leeway)
}

fn code(result: Result<VerifiedToken, AuthError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(err) => err.code(),
    }
}

#[tokio::test]
async fn a_token_signed_by_the_tenant_validates() {
    let token = sign_from_confluence("tenant-a", SECRET, WEBHOOK, now_unix(), 180);
    let verified = verify(&token, QshPolicy::RequestOnly, 30)
        .await
        .expect("valid token");
    assert_eq!(verified.issuer, "tenant-a");
    assert_eq!(verified.context, Some(json!({})));
}

#[tokio::test]
async fn alg_none_is_refused() {
    let token = Token::from_confluence("tenant-a")
        .for_request("POST", WEBHOOK.target)
        .ttl(60)
        .forged("none", "");
    assert_eq!(
        code(verify(&token, QshPolicy::RequestOnly, 30).await),
        "unsupported_alg"
    );
}

#[tokio::test]
async fn an_rs256_token_where_hs256_is_expected_is_refused() {
    let token = Token::signed_install("tenant-a", "https://app.example.com")
        .for_request(WEBHOOK.method, WEBHOOK.target)
        .ttl(60)
        .rs256("kid-1", INSTALL_KEY_1)
        .expect("sign");
    assert_eq!(
        code(verify(&token, QshPolicy::RequestOnly, 30).await),
        "unsupported_alg"
    );
}

#[tokio::test]
async fn expiry_honours_the_leeway() {
    let now = now_unix();
    let expired_long_ago = sign_from_confluence("tenant-a", SECRET, WEBHOOK, now - 300, 180);
    assert_eq!(
        code(verify(&expired_long_ago, QshPolicy::RequestOnly, 30).await),
        "expired"
    );
    let just_expired = sign_from_confluence("tenant-a", SECRET, WEBHOOK, now - 200, 180);
    assert_eq!(
        code(verify(&just_expired, QshPolicy::RequestOnly, 30).await),
        "ok"
    );
    assert_eq!(
        code(verify(&just_expired, QshPolicy::RequestOnly, 0).await),
        "expired"
    );
}

#[tokio::test]
async fn a_token_issued_in_the_future_is_refused() {
    let token = sign_from_confluence("tenant-a", SECRET, WEBHOOK, now_unix() + 600, 180);
    assert_eq!(
        code(verify(&token, QshPolicy::RequestOnly, 30).await),
        "issued_in_future"
    );
}

#[tokio::test]
async fn a_wrong_secret_is_a_bad_signature() {
    let token = sign_from_confluence("tenant-a", "some-other-secret", WEBHOOK, now_unix(), 180);
    assert_eq!(
        code(verify(&token, QshPolicy::RequestOnly, 30).await),
        "bad_signature"
    );
}

#[tokio::test]
async fn an_unknown_issuer_is_refused() {
    let token = sign_from_confluence("tenant-zz", SECRET, WEBHOOK, now_unix(), 180);
    assert_eq!(
        code(verify(&token, QshPolicy::RequestOnly, 30).await),
        "unknown_issuer"
    );
}

#[tokio::test]
async fn a_qsh_for_another_request_is_refused() {
    let other = RequestTarget {
        method: "POST",
        target: "/webhooks/page_removed",
        base_path: "",
    };
    let token = sign_from_confluence("tenant-a", SECRET, other, now_unix(), 180);
    assert_eq!(
        code(verify(&token, QshPolicy::RequestOnly, 30).await),
        "qsh_mismatch"
    );
}

#[tokio::test]
async fn context_qsh_only_where_allowed() {
    let token = Token::from_confluence("tenant-a")
        .ttl(60)
        .claim("qsh", "context-qsh")
        .hs256(SECRET)
        .expect("sign");
    assert_eq!(
        code(verify(&token, QshPolicy::RequestOnly, 30).await),
        "context_qsh_not_allowed"
    );
    assert_eq!(
        code(verify(&token, QshPolicy::AllowContext, 30).await),
        "ok"
    );
}

#[tokio::test]
async fn malformed_tokens_and_missing_claims() {
    assert_eq!(
        code(verify("not-a-jwt", QshPolicy::RequestOnly, 30).await),
        "malformed"
    );
    assert_eq!(
        code(verify("a.b.c.d", QshPolicy::RequestOnly, 30).await),
        "malformed"
    );
    let no_qsh = Token::from_confluence("tenant-a")
        .ttl(60)
        .hs256(SECRET)
        .expect("sign");
    assert_eq!(
        code(verify(&no_qsh, QshPolicy::RequestOnly, 30).await),
        "missing_qsh"
    );
    let no_exp = Token::from_confluence("tenant-a")
        .claim("qsh", "x")
        .without("iat")
        .without("exp")
        .hs256(SECRET)
        .expect("sign");
    assert_eq!(
        code(verify(&no_exp, QshPolicy::RequestOnly, 30).await),
        "malformed"
    );
}

#[tokio::test]
async fn outbound_tokens_verify_on_the_other_side() {
    let request = RequestTarget {
        method: "GET",
        target: "/wiki/rest/api/content/1?expand=a,b",
        base_path: "/wiki",
    };
    let token = OutboundToken {
        app_key: "com.example.app",
        client_key: Some("tenant-a"),
        subject: None,
        request,
        issued_at: now_unix(),
        ttl_seconds: 180,
    }
    .sign(&SharedSecret::new(SECRET))
    .expect("sign");
    let parsed = UnverifiedToken::parse(&token).expect("parses");
    assert_eq!(parsed.issuer(), "com.example.app");
    assert_eq!(parsed.claim("aud"), Some(json!(["tenant-a"])));
    parsed
        .verify_hs256(
            &SharedSecret::new(SECRET),
            request,
            QshPolicy::RequestOnly,
            now_unix(),
            0,
        )
        .expect("verifies with the computed qsh");
}

#[test]
fn tokens_come_from_the_header_or_the_query() {
    assert_eq!(
        extract_token(Some("JWT abc.def.ghi"), None).as_deref(),
        Some("abc.def.ghi")
    );
    assert_eq!(
        extract_token(Some("Bearer x"), Some("a=1&jwt=q.r.s")).as_deref(),
        Some("q.r.s")
    );
    assert_eq!(extract_token(None, Some("a=1")), None);
}

#[test]
fn secrets_never_print() {
    assert_eq!(
        format!("{:?}", SharedSecret::new(SECRET)),
        "SharedSecret(<redacted>)"
    );
}

/// What `parse` read from a token, or why it refused it.
type Parsed = Result<
    (
        String,
        Option<String>,
        String,
        Option<f64>,
        Option<f64>,
        Option<String>,
    ),
    &'static str,
>;

/// `parse` as it was when it built `Value` maps of the header and the claims: the one-pass
/// reader must accept and refuse the same segments and see the same claims.
fn parsed_through_value_maps(header: &[u8], payload: &[u8]) -> Parsed {
    let object = |bytes: &[u8]| match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err("segment is not a JSON object"),
    };
    let header = object(header)?;
    let claims = object(payload)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or("header has no alg")?
        .to_string();
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err("kid is not a string"),
    };
    let issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .filter(|iss| !iss.is_empty())
        .ok_or("no iss claim")?
        .to_string();
    if !is_plausible_identifier(&issuer) {
        return Err("iss is not a plausible clientKey");
    }
    if !claims.get("exp").is_some_and(Value::is_number) {
        return Err("no numeric exp claim");
    }
    Ok((
        alg,
        kid,
        issuer,
        claims.get("exp").and_then(Value::as_f64),
        claims.get("iat").and_then(Value::as_f64),
        claims
            .get("qsh")
            .and_then(Value::as_str)
            .map(str::to_string),
    ))
}

fn parsed_in_one_pass(header: &[u8], payload: &[u8]) -> Parsed {
    let raw = format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    match UnverifiedToken::parse(&raw) {
        Ok(token) => Ok((
            token.alg,
            token.kid,
            token.issuer,
            token.claims.exp,
            token.claims.iat,
            token.claims.qsh,
        )),
        Err(AuthError::Malformed(why)) => Err(why),
        Err(other) => panic!("parse answered {other:?}"),
    }
}

#[test]
fn one_pass_tokens_match_value_parsing() {
    let deep = format!(
        "{{\"iss\":\"t\",\"exp\":1,\"x\":{}{}}}",
        "[".repeat(200),
        "]".repeat(200)
    );
    let good_header: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;
    let good_claims: &[u8] = br#"{"iss":"tenant-a","iat":1,"exp":2,"qsh":"abc","context":{}}"#;
    let headers: Vec<&[u8]> = vec![
        good_header,
        br#"{"alg":"HS256","kid":null}"#,
        br#"{"alg":"RS256","kid":"k-1"}"#,
        br#"{"alg":"HS256","kid":5}"#,
        br#"{"alg":"HS256","kid":{"a":1}}"#,
        br#"{"alg":"HS256","kid":"a","kid":null}"#,
        br#"{"alg":1}"#,
        br#"{"alg":"none","alg":"HS256"}"#,
        br#"{"alg":"HS256","alg":["HS256"]}"#,
        br#"{"a\u006cg":"HS\u0032\u0035\u0036"}"#,
        br#"{"alg":"HS256","x":1e400}"#,
        br#"{"alg":"HS256","x":"\ud800"}"#,
        b"{\"alg\":\"HS256\",\"x\":\"\xff\"}",
        br#"{"alg":"HS256"} x"#,
        br#"{}"#,
        br#"[]"#,
        br#""HS256""#,
        b"",
    ];
    let claims: Vec<&[u8]> = vec![
        good_claims,
        br#"{"exp":2}"#,
        br#"{"iss":7,"exp":2}"#,
        br#"{"iss":"","exp":2}"#,
        br#"{"iss":"a\u0000b","exp":2}"#,
        br#"{"iss":"a","iss":"b","exp":2}"#,
        br#"{"iss":"a","iss":null,"exp":2}"#,
        br#"{"iss":"a","exp":"2"}"#,
        br#"{"iss":"a","exp":2.75,"iat":-1}"#,
        br#"{"iss":"a","exp":18446744073709551615}"#,
        br#"{"iss":"a","exp":2,"exp":{}}"#,
        br#"{"iss":"a","exp":{},"exp":3}"#,
        br#"{"iss":"a","exp":2,"iat":"1","qsh":5}"#,
        br#"{"iss":"a","exp":2,"qsh":"x","qsh":"y"}"#,
        br#"{"iss":"a","exp":2,"context":{"u":[1,{"v":null}]}}"#,
        br#"{"iss":"a","exp":2,"n":1e400}"#,
        br#"{"iss":"a","exp":2,"s":"\udc00"}"#,
        br#"{"iss":"a","exp":2,}"#,
        deep.as_bytes(),
        br#"["iss"]"#,
        b"null",
    ];
    for header in &headers {
        let expected = parsed_through_value_maps(header, good_claims);
        let got = parsed_in_one_pass(header, good_claims);
        assert_eq!(got, expected, "header {}", String::from_utf8_lossy(header));
    }
    for payload in &claims {
        let expected = parsed_through_value_maps(good_header, payload);
        let got = parsed_in_one_pass(good_header, payload);
        assert_eq!(got, expected, "claims {}", String::from_utf8_lossy(payload));
    }
}

/// The HMAC is checked without `jsonwebtoken` on the webhook path: whatever it accepts or
/// refuses, the library's check answers the same.
#[test]
fn the_keyed_hmac_agrees_with_jsonwebtoken() {
    let good = sign_from_confluence("tenant-a", SECRET, WEBHOOK, now_unix(), 180);
    let (unsigned, signature) = good.rsplit_once('.').expect("three segments");
    let mut flipped = signature.as_bytes().to_vec();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ascii");
    let candidates = [
        good.clone(),
        format!("{unsigned}.{flipped}"),
        format!("{unsigned}."),
        format!("{unsigned}.{signature}="),
        format!("{unsigned}.{}", &signature[..signature.len() - 2]),
        format!("{unsigned}.not*base64"),
        format!("{unsigned}=.{signature}"),
        {
            let (header, payload) = unsigned.split_once('.').expect("two segments");
            format!("{header}=.{payload}.{signature}")
        },
        sign_from_confluence("tenant-a", "another-secret", WEBHOOK, now_unix(), 180),
    ];
    let secret = SharedSecret::new(SECRET);
    let key = Hs256Key::new(&secret);
    for raw in &candidates {
        let token = UnverifiedToken::parse(raw).expect("parses");
        let keyed = token
            .check_hs256_keyed(&key, WEBHOOK, QshPolicy::RequestOnly, now_unix(), 30)
            .map_err(|e| e.code());
        let library = token
            .verify_signature(
                &DecodingKey::from_secret(SECRET.as_bytes()),
                Algorithm::HS256,
            )
            .and_then(|()| {
                token.verify_time_and_qsh(WEBHOOK, QshPolicy::RequestOnly, now_unix(), 30)
            })
            .map(|_| ())
            .map_err(|e| e.code());
        assert_eq!(keyed, library, "{raw}");
    }
    assert!(
        UnverifiedToken::parse(&good)
            .expect("parses")
            .check_hs256_keyed(&key, WEBHOOK, QshPolicy::RequestOnly, now_unix(), 30)
            .is_ok()
    );
}

/// The header segments recognised without decoding read, through both general readers,
/// as what the recognition answers.
#[test]
fn plain_hs256_headers_read_as_the_general_readers_read_them() {
    for segment in PLAIN_HS256_HEADERS {
        let header: lean::Header = decode_json_object(segment).expect("a JSON object");
        assert_eq!(header.alg.as_deref(), Some("HS256"), "{segment}");
        assert!(matches!(header.kid, lean::Kid::Absent), "{segment}");
        let library = jsonwebtoken::decode_header(format!("{segment}.e30.c2ln")).expect("header");
        assert_eq!(library.alg, Algorithm::HS256, "{segment}");
        assert_eq!(library.kid, None, "{segment}");
    }
    let good = sign_from_confluence("tenant-a", SECRET, WEBHOOK, now_unix(), 180);
    assert!(is_plain_hs256_header(
        good.split('.').next().expect("a header segment")
    ));
    // Near misses go the general way and are refused or read as before.
    for segment in [
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9=",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ",
        "EyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
    ] {
        assert!(!is_plain_hs256_header(segment));
    }
}

/// A token whose header is recognised gets the answers of one whose same header is decoded.
#[test]
fn recognised_headers_answer_as_decoded_ones() {
    let secret = SharedSecret::new(SECRET);
    let key = Hs256Key::new(&secret);
    let good = sign_from_confluence("tenant-a", SECRET, WEBHOOK, now_unix(), 180);
    let (header, rest) = good.split_once('.').expect("three segments");
    let (payload, signature) = rest.split_once('.').expect("three segments");
    assert!(is_plain_hs256_header(header));
    for raw in [
        good.clone(),
        format!("{header}.{payload}.{}", &signature[1..]),
        format!("{header}.{payload}=.{signature}"),
        format!("{header}.{payload}.{signature}="),
    ] {
        let Ok(token) = UnverifiedToken::parse(&raw) else {
            panic!("{raw} parses");
        };
        let recognised = token
            .check_hs256_keyed(&key, WEBHOOK, QshPolicy::RequestOnly, now_unix(), 30)
            .map_err(|e| e.code());
        let library = token
            .verify_signature(
                &DecodingKey::from_secret(SECRET.as_bytes()),
                Algorithm::HS256,
            )
            .and_then(|()| {
                token.verify_time_and_qsh(WEBHOOK, QshPolicy::RequestOnly, now_unix(), 30)
            })
            .map(|_| ())
            .map_err(|e| e.code());
        assert_eq!(recognised, library, "{raw}");
        assert_eq!(token.algorithm(), "HS256");
        assert_eq!(token.key_id(), None);
    }
}

proptest! {
    #[test]
    fn parsing_arbitrary_strings_never_panics(raw in ".{0,300}") {
        let _ = UnverifiedToken::parse(&raw);
    }

    #[test]
    fn parsing_arbitrary_segments_never_panics(a in "[A-Za-z0-9_-]{0,80}", b in "[A-Za-z0-9_-]{0,80}") {
        let _ = UnverifiedToken::parse(&format!("{a}.{b}.sig"));
    }
}
