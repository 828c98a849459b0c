//! The Confluence REST client against a fake Confluence and authorization server on
//! loopback.

mod fake;
mod limits;
mod retries;
mod safety;
mod signing;
mod users;

use std::time::Duration;

use chrono::Utc;
use tributary_common::Config;
use tributary_common::connect::SharedSecret;
use tributary_common::store::{Tenant, TenantStatus};
use tributary_processor::confluence::{ConfluenceClient, ConfluenceClients};

use fake::{CLIENT_KEY, FakeAuthServer, FakeConfluence, IssuedTokens, OAUTH_CLIENT_ID, SECRET};

/// A tenant living at `base_url`.
pub fn tenant(base_url: &str) -> Tenant {
    let now = Utc::now();
    Tenant {
        client_key: CLIENT_KEY.into(),
        app_key: fake::APP_KEY.into(),
        base_url: base_url.into(),
        display_url: None,
        display_url_servicedesk_help_center: None,
        product_type: Some("confluence".into()),
        description: None,
        server_version: None,
        plugins_version: None,
        oauth_client_id: Some(OAUTH_CLIENT_ID.into()),
        installation_id: None,
        entitlement_id: None,
        entitlement_number: None,
        service_entitlement_number: None,
        status: TenantStatus::Enabled,
        installed_at: now,
        enabled_at: Some(now),
        disabled_at: None,
        uninstalled_at: None,
        status_changed_at: now,
        updated_at: now,
    }
}

/// Configuration for the tests: loopback tenants allowed, plus `extra` settings.
pub fn config(auth_url: &str, extra: &[(&str, &str)]) -> Config {
    let mut env = vec![
        (
            "TRIBUTARY_TENANT_HOST_ALLOWLIST".to_string(),
            "127.0.0.1".to_string(),
        ),
        (
            "TRIBUTARY_OAUTH_AUTHORIZATION_SERVER_URL".to_string(),
            auth_url.to_string(),
        ),
        ("TRIBUTARY_APP_KEY".to_string(), fake::APP_KEY.to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::load_from(None, env).expect("test configuration is valid")
}

/// A fake Confluence, a fake authorization server and a client for the tenant on them.
pub struct Harness {
    pub confluence: FakeConfluence,
    pub auth: FakeAuthServer,
    pub client: ConfluenceClient,
}

impl Harness {
    pub async fn start(extra: &[(&str, &str)]) -> Harness {
        Self::start_with_grant_delay(extra, Duration::ZERO).await
    }

    pub async fn start_with_grant_delay(extra: &[(&str, &str)], grant_delay: Duration) -> Harness {
        let issued = IssuedTokens::default();
        let confluence = FakeConfluence::start(issued.clone()).await;
        let auth = FakeAuthServer::start(issued, confluence.base_url(), grant_delay).await;
        let clients = ConfluenceClients::from_config(&config(&auth.url(), extra))
            .expect("clients from configuration");
        let client = clients
            .for_tenant(&tenant(&confluence.base_url()), SharedSecret::new(SECRET))
            .expect("loopback tenant is allowed");
        Harness {
            confluence,
            auth,
            client,
        }
    }

    /// Panics unless every request the fake received passed its checks.
    pub fn assert_all_verified(&self) {
        for received in self.confluence.received() {
            assert_eq!(
                received.verdict,
                Ok(()),
                "{} {} was refused by the fake Confluence",
                received.method,
                received.target
            );
        }
    }
}
