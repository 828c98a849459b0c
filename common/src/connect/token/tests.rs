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
    assert_eq!(parsed.claim("aud"), Some(&json!(["tenant-a"])));
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
