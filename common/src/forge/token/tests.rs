use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use tributary_devkit::forge::{ForgeInstallation, JwksServer, TEST_APP_ID};
use tributary_devkit::{INSTALL_KEY_2, INSTALL_PUB_1, INSTALL_PUB_2, InstallKey};

use super::*;

const KID: &str = "forge/invocation-token/test-1";

struct Setup {
    jwks: JwksServer,
    verifier: ForgeVerifier,
    site: ForgeInstallation,
}

async fn setup() -> Setup {
    let key = InstallKey::test(KID);
    let jwks = JwksServer::start(&[&key]).await;
    let provider =
        || JwksProvider::new(&jwks.url(), Duration::from_secs(2), Duration::from_secs(60));
    let hosts = HostAllowlist::new(&["api.atlassian.com".into()]).expect("hosts");
    let verifier = ForgeVerifier::new(TEST_APP_ID, provider(), provider(), hosts, 30);
    let site = ForgeInstallation::new(TEST_APP_ID, "https://api.atlassian.com", key);
    Setup {
        jwks,
        verifier,
        site,
    }
}

async fn refusal(setup: &Setup, token: &str) -> &'static str {
    match setup.verifier.verify(token).await {
        Ok(_) => "accepted",
        Err(err) => err.code(),
    }
}

#[tokio::test]
async fn a_token_signed_by_a_jwks_key_is_accepted() {
    let s = setup().await;
    let invocation = s
        .verifier
        .verify(&s.site.fit().expect("sign"))
        .await
        .expect("valid");
    assert_eq!(invocation.installation_id, s.site.installation_id);
    assert_eq!(
        invocation.cloud_id.as_deref(),
        Some(s.site.cloud_id.as_str())
    );
    assert_eq!(invocation.api_base_url, s.site.api_base_url);
    assert_eq!(invocation.module_key.as_deref(), Some("tributary-events"));
}

#[tokio::test]
async fn the_jwks_is_fetched_once_for_many_tokens() {
    let s = setup().await;
    for _ in 0..20 {
        s.verifier
            .verify(&s.site.fit().expect("sign"))
            .await
            .expect("valid");
    }
    assert_eq!(s.jwks.hits(), 1);
}

#[tokio::test]
async fn an_unknown_kid_refetches_at_most_once_per_interval() {
    let key = InstallKey::test(KID);
    let jwks = JwksServer::start(&[&key]).await;
    let interval = Duration::from_millis(300);
    let provider = || JwksProvider::new(&jwks.url(), Duration::from_secs(2), interval);
    let hosts = HostAllowlist::new(&["api.atlassian.com".into()]).expect("hosts");
    let verifier = ForgeVerifier::new(TEST_APP_ID, provider(), provider(), hosts, 30);
    let mut site = ForgeInstallation::new(TEST_APP_ID, "https://api.atlassian.com", key);
    verifier
        .verify(&site.fit().expect("sign"))
        .await
        .expect("valid");
    site.key = InstallKey::new(
        "forge/invocation-token/unknown",
        INSTALL_KEY_2,
        INSTALL_PUB_2,
    );
    let code = |verified: Result<Invocation, ForgeAuthError>| match verified {
        Ok(_) => "accepted",
        Err(err) => err.code(),
    };
    for _ in 0..5 {
        assert_eq!(
            code(verifier.verify(&site.fit().expect("sign")).await),
            "unknown_kid"
        );
    }
    assert_eq!(
        jwks.hits(),
        1,
        "within the interval the cached JWKS answers"
    );
    tokio::time::sleep(interval + Duration::from_millis(50)).await;
    for _ in 0..5 {
        assert_eq!(
            code(verifier.verify(&site.fit().expect("sign")).await),
            "unknown_kid"
        );
    }
    assert_eq!(jwks.hits(), 2, "one more fetch once the interval passed");
}

#[tokio::test]
async fn a_rotated_key_is_picked_up() {
    let key = InstallKey::test(KID);
    let jwks = JwksServer::start(&[&key]).await;
    let provider = || JwksProvider::new(&jwks.url(), Duration::from_secs(2), Duration::ZERO);
    let hosts = HostAllowlist::new(&["api.atlassian.com".into()]).expect("hosts");
    let verifier = ForgeVerifier::new(TEST_APP_ID, provider(), provider(), hosts, 30);
    let mut site = ForgeInstallation::new(TEST_APP_ID, "https://api.atlassian.com", key);
    verifier
        .verify(&site.fit().expect("sign"))
        .await
        .expect("valid");
    let next = InstallKey::new(
        "forge/invocation-token/test-2",
        INSTALL_KEY_2,
        INSTALL_PUB_2,
    );
    jwks.add_key(&next);
    site.key = next;
    verifier
        .verify(&site.fit().expect("sign"))
        .await
        .expect("rotated key");
}

#[tokio::test]
async fn a_failing_jwks_host_is_unavailable_not_unknown() {
    let s = setup().await;
    s.jwks.set_failing(true);
    let err = s
        .verifier
        .verify(&s.site.fit().expect("sign"))
        .await
        .expect_err("down");
    assert_eq!(err.code(), "key_unavailable");
    assert!(err.is_unavailable());
}

#[tokio::test]
async fn forged_tokens_are_refused_with_their_code() {
    let s = setup().await;
    let now = now_unix();
    let token = s.site.token();
    let wrong_key = InstallKey::new(KID, INSTALL_KEY_2, INSTALL_PUB_2);

    // Signed by a key that is not the one the JWKS holds under this kid.
    assert_eq!(
        refusal(&s, &wrong_key.sign(&token).expect("sign")).await,
        "bad_signature"
    );
    // The header says RS256 but the payload was changed after signing.
    let genuine = s.site.fit().expect("sign");
    let mut parts: Vec<String> = genuine.split('.').map(str::to_string).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(
            &s.site
                .token()
                .claim("aud", "ari:cloud:ecosystem::app/other")
                .claims(),
        )
        .expect("json"),
    );
    assert_eq!(refusal(&s, &parts.join(".")).await, "bad_signature");
    // HS256 keyed with the public key (the classic algorithm confusion).
    let confused = {
        let header =
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{KID}"}}"#));
        let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(token.claims()).expect("json"));
        let input = format!("{header}.{claims}");
        let signature = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(INSTALL_PUB_1.as_bytes()),
            Algorithm::HS256,
        )
        .expect("hmac");
        format!("{input}.{signature}")
    };
    assert_eq!(refusal(&s, &confused).await, "unsupported_alg");
    assert_eq!(
        refusal(&s, &token.forged("none", "")).await,
        "unsupported_alg"
    );
    assert_eq!(
        refusal(
            &s,
            &s.site
                .sign(&token.clone().claim("exp", now - 120))
                .expect("sign")
        )
        .await,
        "expired"
    );
    assert_eq!(
        refusal(
            &s,
            &s.site
                .sign(&token.clone().claim("nbf", now + 600))
                .expect("sign")
        )
        .await,
        "not_yet_valid"
    );
    assert_eq!(
        refusal(
            &s,
            &s.site
                .sign(&token.clone().claim(
                    "aud",
                    "ari:cloud:ecosystem::app/00000000-0000-4000-8000-000000000000"
                ))
                .expect("sign")
        )
        .await,
        "wrong_audience"
    );
    assert_eq!(
        refusal(
            &s,
            &s.site
                .sign(&token.clone().claim("iss", "someone-else"))
                .expect("sign")
        )
        .await,
        "wrong_issuer"
    );
    let mut evil = s.site.clone();
    evil.api_base_url = "https://api.evil.example/ex/confluence/x".into();
    assert_eq!(
        refusal(&s, &evil.fit().expect("sign")).await,
        "api_host_not_allowed"
    );
    assert_eq!(
        refusal(
            &s,
            &s.site.sign(&token.clone().without("app")).expect("sign")
        )
        .await,
        "missing_claim"
    );
    assert_eq!(
        refusal(
            &s,
            &s.site.sign(&token.clone().header("kid", "")).expect("sign")
        )
        .await,
        "invalid_kid"
    );
    assert_eq!(refusal(&s, "not-a-jwt").await, "malformed");
}

#[tokio::test]
async fn the_bare_app_uuid_is_accepted_as_configuration() {
    let s = setup().await;
    let uuid = TEST_APP_ID.trim_start_matches("ari:cloud:ecosystem::app/");
    let verifier = ForgeVerifier::new(
        uuid,
        s.verifier.production.clone(),
        s.verifier.staging.clone(),
        s.verifier.api_hosts.clone(),
        30,
    );
    assert_eq!(verifier.app_ari(), TEST_APP_ID);
    verifier
        .verify(&s.site.fit().expect("sign"))
        .await
        .expect("valid");
}

#[test]
fn bearer_tokens_and_cloud_ids() {
    assert_eq!(ForgeVerifier::bearer(Some("Bearer abc")), Ok("abc"));
    assert_eq!(ForgeVerifier::bearer(Some("bearer  abc ")), Ok("abc"));
    assert_eq!(
        ForgeVerifier::bearer(Some("JWT abc")),
        Err(ForgeAuthError::MissingToken)
    );
    assert_eq!(
        ForgeVerifier::bearer(None),
        Err(ForgeAuthError::MissingToken)
    );
    assert_eq!(
        cloud_id_of("https://api.atlassian.com/ex/confluence/abc-123").as_deref(),
        Some("abc-123")
    );
    assert_eq!(cloud_id_of("https://api.atlassian.com/other"), None);
}

#[tokio::test]
async fn staging_tokens_are_checked_against_the_staging_jwks() {
    let key = InstallKey::test(KID);
    let production = JwksServer::start(&[]).await;
    let staging = JwksServer::start(&[&key]).await;
    let provider = |server: &JwksServer| {
        JwksProvider::new(
            &server.url(),
            Duration::from_secs(2),
            Duration::from_secs(60),
        )
    };
    let hosts = HostAllowlist::new(&["api.atlassian.com".into(), "api.stg.atlassian.com".into()])
        .expect("hosts");
    let verifier = ForgeVerifier::new(
        TEST_APP_ID,
        provider(&production),
        provider(&staging),
        hosts,
        30,
    );
    let on_staging =
        ForgeInstallation::new(TEST_APP_ID, "https://api.stg.atlassian.com", key.clone());
    verifier
        .verify(&on_staging.fit().expect("sign"))
        .await
        .expect("a staging token verifies with the staging keys");
    let on_production = ForgeInstallation::new(TEST_APP_ID, "https://api.atlassian.com", key);
    let refused = verifier
        .verify(&on_production.fit().expect("sign"))
        .await
        .expect_err("the production JWKS lacks the key");
    assert_eq!(refused.code(), "unknown_kid");
    assert_eq!((staging.hits(), production.hits()), (1, 1));
}

#[tokio::test]
async fn a_token_within_the_leeway_is_accepted_and_one_past_it_is_not() {
    // The verifier's leeway is 30 s: clocks of Forge and the ingest may disagree by that.
    let s = setup().await;
    let now = now_unix();
    let token = s
        .site
        .token()
        .claim("iat", now - 100)
        .claim("nbf", now - 100);
    let just_expired = token.clone().claim("exp", now - 10);
    assert_eq!(
        refusal(&s, &s.site.sign(&just_expired).expect("sign")).await,
        "accepted"
    );
    let almost_valid = token.clone().claim("nbf", now + 10).claim("exp", now + 60);
    assert_eq!(
        refusal(&s, &s.site.sign(&almost_valid).expect("sign")).await,
        "accepted"
    );
    let long_expired = token.clone().claim("exp", now - 45);
    assert_eq!(
        refusal(&s, &s.site.sign(&long_expired).expect("sign")).await,
        "expired"
    );
    let not_yet = token.claim("nbf", now + 45).claim("exp", now + 120);
    assert_eq!(
        refusal(&s, &s.site.sign(&not_yet).expect("sign")).await,
        "not_yet_valid"
    );
}
