//! The Confluence REST client against the simulated Confluence (and its authorization
//! server) on loopback.

mod forge;
mod limits;
mod quotas;
mod retries;
mod safety;
mod signing;
mod site;
mod users;
mod writes;

use chrono::Utc;
use tributary_common::Config;
use tributary_common::connect::SharedSecret;
use tributary_common::shutdown::Shutdown;
use tributary_common::store::{Tenant, TenantStatus};
use tributary_devkit::confluence::{
    Answers, AuthorizationServer, Simulator, SimulatorSettings, Verdict,
};
use tributary_processor::confluence::{ConfluenceClient, ConfluenceClients};

pub const APP_KEY: &str = "com.example.tributary";
pub const CLIENT_KEY: &str = "client-key-acme";
pub const SECRET: &str = "a-shared-secret-of-reasonable-length-0123456789";
pub const OAUTH_CLIENT_ID: &str = "oauth-client-acme";

/// A tenant living at `base_url`.
pub fn tenant(base_url: &str) -> Tenant {
    let now = Utc::now();
    Tenant {
        client_key: CLIENT_KEY.into(),
        app_key: APP_KEY.into(),
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
        ("TRIBUTARY_APP_KEY".to_string(), APP_KEY.to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::load_from(None, env).expect("test configuration is valid")
}

/// A simulated Confluence answering `answers`, with the test tenant registered.
pub async fn simulator(answers: Answers, stop: &Shutdown) -> Simulator {
    let simulator = Simulator::start(
        SimulatorSettings::new(APP_KEY).answering(answers),
        stop.clone(),
    )
    .await
    .expect("the simulated Confluence starts");
    simulator.register(CLIENT_KEY, SECRET);
    simulator.set_oauth_client_id(CLIENT_KEY, OAUTH_CLIENT_ID);
    simulator
}

/// A simulated Confluence, its authorization server and a client for the tenant on them.
pub struct Harness {
    pub confluence: Simulator,
    pub auth: AuthorizationServer,
    pub client: ConfluenceClient,
    stop: Shutdown,
}

impl Harness {
    /// Against a simulator that echoes what it receives.
    pub async fn start(extra: &[(&str, &str)]) -> Harness {
        Harness::answering(Answers::Echo, extra).await
    }

    /// Against a simulated site with content.
    pub async fn on_site(extra: &[(&str, &str)]) -> Harness {
        Harness::answering(Answers::Site, extra).await
    }

    async fn answering(answers: Answers, extra: &[(&str, &str)]) -> Harness {
        let stop = Shutdown::new();
        let confluence = simulator(answers, &stop).await;
        let auth = confluence.authorization_server();
        let clients = ConfluenceClients::from_config(&config(&auth.url(), extra))
            .expect("clients from configuration");
        let client = clients
            .for_tenant(&tenant(&confluence.base_url()), SharedSecret::new(SECRET))
            .expect("loopback tenant is allowed");
        Harness {
            confluence,
            auth,
            client,
            stop,
        }
    }

    /// Panics unless every request the simulator received passed its checks.
    pub fn assert_all_verified(&self) {
        for call in self.confluence.calls() {
            assert_eq!(
                call.verdict,
                Verdict::Accepted,
                "{} {} was refused by the simulated Confluence",
                call.method,
                call.target
            );
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
