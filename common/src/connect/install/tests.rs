use std::time::Duration;

use super::*;
use crate::connect::keys::InstallKeyProvider;
use tributary_devkit::{INSTALL_KEY_1, INSTALL_KEY_2, INSTALL_PUB_1, KeyServer, Token};

const APP: &str = "https://app.example.com";
const INSTALLED: RequestTarget<'static> = RequestTarget {
    method: "POST",
    target: "/lifecycle/installed",
    base_path: "",
};

fn verifier(servers: Vec<String>) -> InstallVerifier {
    InstallVerifier::new(
        InstallKeyProvider::new(servers, Duration::from_secs(2), 16),
        vec![APP.to_string(), "https://eu.app.example.com/".to_string()],
        30,
    )
}

fn token(client_key: &str, audience: &str, kid: &str, key: &str) -> String {
    signed_install(client_key, audience, INSTALLED, kid, key)
}

fn signed_install(
    client_key: &str,
    audience: &str,
    request: RequestTarget<'_>,
    kid: &str,
    key: &str,
) -> String {
    Token::signed_install(client_key, audience)
        .for_request(request.method, request.target)
        .rs256(kid, key)
        .expect("sign")
}

#[tokio::test]
async fn one_fetch_serves_two_installs_with_the_same_kid() {
    let server = KeyServer::start(&[("kid-1", INSTALL_PUB_1)]).await;
    let verifier = verifier(vec![server.url()]);
    for client in ["tenant-a", "tenant-b"] {
        let verified = verifier
            .verify(
                &token(client, APP, "kid-1", INSTALL_KEY_1),
                INSTALLED,
                client,
            )
            .await
            .expect("valid install");
        assert_eq!(verified.client_key, client);
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn falls_back_to_the_next_server_when_the_first_fails() {
    let broken = KeyServer::start(&[("kid-1", INSTALL_PUB_1)]).await;
    broken.set_failing(true);
    let healthy = KeyServer::start(&[("kid-1", INSTALL_PUB_1)]).await;
    let verifier = verifier(vec![broken.url(), healthy.url()]);
    verifier
        .verify(
            &token("tenant-a", APP, "kid-1", INSTALL_KEY_1),
            INSTALLED,
            "tenant-a",
        )
        .await
        .expect("second server answers");
    assert_eq!((broken.hits(), healthy.hits()), (1, 1));
}

#[tokio::test]
async fn a_kid_with_path_tricks_is_refused_without_any_fetch() {
    let server = KeyServer::start(&[("kid-1", INSTALL_PUB_1)]).await;
    let verifier = verifier(vec![server.url()]);
    for kid in ["../x", "a/b", "..", "%2e%2e", ""] {
        let err = verifier
            .verify(
                &token("tenant-a", APP, kid, INSTALL_KEY_1),
                INSTALLED,
                "tenant-a",
            )
            .await
            .expect_err("unsafe kid");
        assert_eq!(err.code(), "invalid_kid", "kid {kid:?}");
    }
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn audience_issuer_signature_and_qsh_are_checked() {
    let server = KeyServer::start(&[("kid-1", INSTALL_PUB_1)]).await;
    let verifier = verifier(vec![server.url()]);
    let check = |t: String, client: &'static str| {
        let verifier = verifier.clone();
        async move {
            verifier
                .verify(&t, INSTALLED, client)
                .await
                .map(|_| ())
                .map_err(|e| e.code())
        }
    };
    assert_eq!(
        check(
            token(
                "tenant-a",
                "https://other-app.example.com",
                "kid-1",
                INSTALL_KEY_1
            ),
            "tenant-a"
        )
        .await,
        Err("wrong_audience")
    );
    assert_eq!(
        check(
            token(
                "tenant-a",
                "https://eu.app.example.com",
                "kid-1",
                INSTALL_KEY_1
            ),
            "tenant-a"
        )
        .await,
        Ok(())
    );
    assert_eq!(
        check(
            token(
                "tenant-a",
                "https://app.example.com/",
                "kid-1",
                INSTALL_KEY_1
            ),
            "tenant-a"
        )
        .await,
        Ok(())
    );
    assert_eq!(
        check(token("tenant-a", APP, "kid-1", INSTALL_KEY_1), "tenant-b").await,
        Err("issuer_mismatch")
    );
    assert_eq!(
        check(token("tenant-a", APP, "kid-1", INSTALL_KEY_2), "tenant-a").await,
        Err("bad_signature")
    );
    assert_eq!(
        check(
            token("tenant-a", APP, "unknown-kid", INSTALL_KEY_1),
            "tenant-a"
        )
        .await,
        Err("unknown_kid")
    );
    let for_uninstall = signed_install(
        "tenant-a",
        APP,
        RequestTarget {
            method: "POST",
            target: "/lifecycle/uninstalled",
            base_path: "",
        },
        "kid-1",
        INSTALL_KEY_1,
    );
    assert_eq!(check(for_uninstall, "tenant-a").await, Err("qsh_mismatch"));
}

#[tokio::test]
async fn an_hs256_install_is_refused() {
    let verifier = verifier(vec!["http://127.0.0.1:9".to_string()]);
    let hs = Token::from_confluence("tenant-a")
        .for_request(INSTALLED.method, INSTALLED.target)
        .ttl(60)
        .hs256("secret")
        .expect("sign");
    let err = verifier
        .verify(&hs, INSTALLED, "tenant-a")
        .await
        .expect_err("hs256");
    assert_eq!(err.code(), "unsupported_alg");
}

#[tokio::test]
async fn unreachable_key_servers_are_unavailable_not_unauthorized() {
    let verifier = verifier(vec!["http://127.0.0.1:9".to_string()]);
    let err = verifier
        .verify(
            &token("tenant-a", APP, "kid-1", INSTALL_KEY_1),
            INSTALLED,
            "tenant-a",
        )
        .await
        .expect_err("no key");
    assert_eq!(err.code(), "key_unavailable");
    assert!(err.is_unavailable());
}
