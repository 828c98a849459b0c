//! Calling back a Forge installation: its API base URL on the simulated gateway, the app
//! system token as bearer, and clear errors when there is no usable token.

use tributary_common::connect::token::now_unix;
use tributary_common::forge::SystemToken;
use tributary_common::shutdown::Shutdown;
use tributary_common::store::{ForgeInstallation, ForgeStatus};
use tributary_devkit::confluence::{Answers, Caller, Verdict};
use tributary_processor::confluence::{ConfluenceClients, ConfluenceError};

use crate::{CLIENT_KEY, config, simulator};

const CLOUD_ID: &str = "c10d0000-0000-4000-8000-00000000f0e1";
const SYSTEM_TOKEN: &str = "forge-system-token-for-tests";

fn installation(api_origin: &str, token_expires_at: Option<i64>) -> ForgeInstallation {
    ForgeInstallation {
        installation_id: "ari:cloud:ecosystem::installation/1".into(),
        cloud_id: Some(CLOUD_ID.into()),
        tenant_key: CLIENT_KEY.into(),
        api_base_url: Some(format!("{api_origin}/ex/confluence/{CLOUD_ID}")),
        app_id: None,
        environment_type: None,
        status: ForgeStatus::Installed,
        token_expires_at,
    }
}

#[tokio::test]
async fn calls_go_to_the_api_base_url_with_the_system_token() {
    let stop = Shutdown::new();
    let confluence = simulator(Answers::Site, &stop).await;
    confluence.register_forge(CLOUD_ID, SYSTEM_TOKEN, CLIENT_KEY);
    confluence.add_page(CLIENT_KEY, "42", "7", "Home");
    let auth = confluence.authorization_server();
    let clients = ConfluenceClients::from_config(&config(
        &auth.url(),
        &[("TRIBUTARY_FORGE_API_HOST_ALLOWLIST", "127.0.0.1")],
    ))
    .expect("clients");
    let client = clients
        .for_forge(
            &installation(&confluence.forge_api_origin(), Some(now_unix() + 600)),
            Some(SystemToken::new(SYSTEM_TOKEN)),
        )
        .expect("a Forge client");
    assert_eq!(
        client.base_url(),
        format!(
            "{}/ex/confluence/{CLOUD_ID}/wiki",
            confluence.forge_api_origin()
        )
    );
    let content = client.get_content("42", &[]).await.expect("content");
    assert_eq!(content.id, "42");
    let calls = confluence.calls();
    assert!(!calls.is_empty());
    for call in &calls {
        assert_eq!(call.verdict, Verdict::Accepted, "{}", call.target);
        assert_eq!(call.caller, Caller::Forge);
        assert!(
            call.target
                .starts_with(&format!("/ex/confluence/{CLOUD_ID}/wiki/")),
            "{}",
            call.target
        );
    }
    stop.cancel();
}

#[tokio::test]
async fn a_missing_or_expired_token_is_a_clear_error_without_a_request() {
    let stop = Shutdown::new();
    let confluence = simulator(Answers::Echo, &stop).await;
    confluence.register_forge(CLOUD_ID, SYSTEM_TOKEN, CLIENT_KEY);
    let auth = confluence.authorization_server();
    let clients = ConfluenceClients::from_config(&config(
        &auth.url(),
        &[("TRIBUTARY_FORGE_API_HOST_ALLOWLIST", "127.0.0.1")],
    ))
    .expect("clients");
    let origin = confluence.forge_api_origin();
    let missing = clients.for_forge(&installation(&origin, None), None);
    assert!(matches!(missing, Err(ConfluenceError::ForgeToken(_))));

    let expired = clients
        .for_forge(
            &installation(&origin, Some(now_unix() - 1)),
            Some(SystemToken::new(SYSTEM_TOKEN)),
        )
        .expect("a client is made; its calls fail");
    let answer = expired.get_content("42", &[]).await;
    assert!(
        matches!(&answer, Err(ConfluenceError::ForgeToken(m)) if m.contains("expired")),
        "{answer:?}"
    );
    assert!(!answer.expect_err("refused").is_transient());
    assert_eq!(confluence.hits(), 0, "nothing was sent");

    // The API base URL must be on the Forge API host allowlist.
    let strict = ConfluenceClients::from_config(&config(&auth.url(), &[])).expect("clients");
    assert!(matches!(
        strict.for_forge(
            &installation(&origin, Some(now_unix() + 600)),
            Some(SystemToken::new(SYSTEM_TOKEN))
        ),
        Err(ConfluenceError::HostNotAllowed(_))
    ));
    stop.cancel();
}
