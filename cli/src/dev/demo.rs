//! The simulated Confluence of `tributary dev --demo` and `tributary demo-site`. It installs
//! demo tenants through real signed installs (its own RSA key, served by its own key server
//! the ingest is pointed at), enables them, then sends the webhooks people editing pages
//! would cause; the demo handler calls the simulated REST API back. With a Forge app id, a
//! Forge installation beside them on a site of its own: its own JWKS, signed invocation
//! tokens, `avi:` events, and the simulated API gateway the handler calls back with the
//! system token. Each demo tenant installs with an `oauthClientId`, so the handler can act
//! as the user who caused an event: the simulator's authorization server grants the token,
//! and the demo logs each user-token grant and each REST call made with one.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use backon::{ConstantBuilder, Retryable};
use serde_json::{Value, json};
use tributary_common::connect::SharedSecret;
use tributary_common::shutdown::Shutdown;
use tributary_common::store::site_tenant_key;
use tributary_devkit::confluence::{BASE_PATH, Caller, Simulator, SimulatorSettings, Verdict};
use tributary_devkit::forge::{ForgeInstallation, JwksServer};
use tributary_devkit::{InstallKey, KeyServer, Token};

/// The first demo tenant's clientKey; the others get `-2`, `-3`, ...
const CLIENT_KEY: &str = "demo-site";
const SPACE_ID: &str = "98305";
const SPACE_KEY: &str = "DEMO";
const USER: &str = "557058:demo-user";
/// How often the demo looks at what the simulated Confluence received as users.
const USER_CALL_POLL: Duration = Duration::from_millis(200);
/// Pause between the scripted webhooks.
const SCRIPT_PACE: Duration = Duration::from_millis(800);
const PAGES: [(&str, &str); 3] = [
    ("65601", "Team onboarding"),
    ("65602", "Release notes 1.0"),
    ("65603", "Architecture decisions"),
];
/// The Forge app `tributary dev --demo` plays, unless `forge_app_id` is set.
pub const DEMO_FORGE_APP_ID: &str = "ari:cloud:ecosystem::app/7d3e0c51-1f0a-4b6e-9d8c-0000000de4f0";
/// What the steady stream after the script cycles through.
const STEADY_EVENTS: [&str; 5] = [
    "page_updated",
    "page_viewed",
    "page_created",
    "comment_created",
    "label_added",
];

/// Where the demo serves and how it is reached.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Demo tenants to install (one site each, on the same simulator).
    pub tenants: usize,
    pub site_listen: SocketAddr,
    /// The address the services reach the simulated site at (`http://host:port`, no path);
    /// by default the address it listens on.
    pub site_public_url: Option<String>,
    pub key_server_listen: SocketAddr,
    /// The address the ingest reaches the key server at; by default the one it listens on.
    pub key_server_public_url: Option<String>,
    /// Pause between webhooks once the script is done.
    pub steady_pace: Duration,
    /// The Forge app to play a Forge installation of (its JWKS on loopback); none without.
    pub forge_app_id: Option<String>,
}

impl DemoOptions {
    /// One tenant on loopback ports, a webhook every ten seconds after the script.
    pub fn in_process() -> DemoOptions {
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        DemoOptions {
            tenants: 1,
            site_listen: loopback,
            site_public_url: None,
            key_server_listen: loopback,
            key_server_public_url: None,
            steady_pace: Duration::from_secs(10),
            forge_app_id: None,
        }
    }
}

/// The demo's moving parts, started before the configuration is final: the ingest must
/// know the key server's and the simulator's addresses.
pub struct Demo {
    key: InstallKey,
    key_server: String,
    simulator: Simulator,
    site_url: String,
    options: DemoOptions,
    forge: Option<(ForgeInstallation, JwksServer)>,
}

impl Demo {
    pub async fn start(
        app_key: &str,
        options: DemoOptions,
        shutdown: Shutdown,
    ) -> anyhow::Result<Demo> {
        let kid = format!("demo-{}", uuid::Uuid::new_v4().simple());
        let key = tokio::task::spawn_blocking(move || InstallKey::generate(&kid))
            .await
            .context("generating the demo install key")??;
        let key_server =
            KeyServer::bind(options.key_server_listen, &[(key.kid(), key.public_pem())])
                .await
                .with_context(|| {
                    format!(
                        "starting the demo install-key server on {}",
                        options.key_server_listen
                    )
                })?;
        let listener = tokio::net::TcpListener::bind(options.site_listen)
            .await
            .with_context(|| format!("listening on {}", options.site_listen))?;
        let simulator = Simulator::serve(listener, SimulatorSettings::new(app_key), shutdown)
            .context("starting the simulated Confluence")?;
        let forge = match &options.forge_app_id {
            Some(app_id) => Some(start_forge(app_id, &simulator).await?),
            None => None,
        };
        let site_url = match &options.site_public_url {
            Some(url) => format!("{}{BASE_PATH}", url.trim_end_matches('/')),
            None => simulator.base_url(),
        };
        let key_server = match &options.key_server_public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => key_server.url(),
        };
        Ok(Demo {
            key,
            key_server,
            simulator,
            site_url,
            options,
            forge,
        })
    }

    /// The JWKS the ingest verifies the demo's invocation tokens with, when it plays Forge.
    pub fn jwks_url(&self) -> Option<String> {
        self.forge.as_ref().map(|(_, jwks)| jwks.url())
    }

    /// The install-key server to put first in `install_keys_url`.
    pub fn key_server_url(&self) -> &str {
        &self.key_server
    }

    /// The simulated site's base URL (`http://host:port/wiki`).
    pub fn site_url(&self) -> String {
        self.site_url.clone()
    }

    /// The simulated authorization server, for `oauth_authorization_server_url`: the demo
    /// sites live on loopback, which no Atlassian server grants tokens for.
    pub fn authorization_server_url(&self) -> String {
        self.simulator.authorization_server().url()
    }

    /// Installs the demo tenants at the ingest on `ingest`, whose app base URL is
    /// `audience`, then sends webhooks until `shutdown` fires.
    pub async fn run(
        self,
        ingest: String,
        audience: String,
        app_key: String,
        shutdown: Shutdown,
    ) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the demo HTTP client")?;
        let sites: Vec<Site> = (0..self.options.tenants.max(1))
            .map(|i| Site {
                http: http.clone(),
                ingest: ingest.clone(),
                client_key: if i == 0 {
                    CLIENT_KEY.to_string()
                } else {
                    format!("{CLIENT_KEY}-{}", i + 1)
                },
                secret: SharedSecret::new(format!(
                    "{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                )),
            })
            .collect();
        tokio::spawn(report_user_calls(self.simulator.clone(), shutdown.clone()));
        for site in &sites {
            for (id, title) in PAGES {
                self.simulator
                    .add_page(&site.client_key, id, SPACE_ID, title);
            }
            self.simulator
                .register(&site.client_key, site.secret.expose());
            self.simulator
                .set_oauth_client_id(&site.client_key, &site.oauth_client_id());
            let install = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                installed = site.install(&self, &audience, &app_key) => installed,
            };
            install?;
            tracing::info!(
                client_key = %site.client_key, base_url = %self.site_url(),
                "demo tenant installed through a signed install"
            );
        }
        let forge_site = self
            .forge
            .as_ref()
            .map(|(installation, _)| ForgeSite::new(&self, installation, &http, &ingest));
        if let Some(forge_site) = &forge_site {
            forge_site
                .deliver_lifecycle("avi:forge:installed:app")
                .await;
        }

        let mut script = vec![
            ("page_created", page(PAGES[0], 1)),
            ("page_viewed", page(PAGES[0], 1)),
            ("comment_created", comment(PAGES[0])),
            ("page_updated", page(PAGES[0], 2)),
            ("label_added", label(PAGES[0])),
            ("page_created", page(PAGES[1], 1)),
            (
                "search_performed",
                json!({ "query": "release", "results": 2 }),
            ),
            ("page_created", page(PAGES[2], 1)),
            ("page_viewed", page(PAGES[1], 1)),
        ]
        .into_iter();
        let mut sent: u64 = 0;
        loop {
            let site = &sites[(sent as usize) % sites.len()];
            let (event, entity) = match script.next() {
                Some(next) => next,
                None => {
                    let round = sent / sites.len() as u64;
                    let on = PAGES[(round as usize) % PAGES.len()];
                    let event = STEADY_EVENTS[(round as usize) % STEADY_EVENTS.len()];
                    let entity = match event {
                        "comment_created" => comment(on),
                        "label_added" => label(on),
                        "page_created" | "page_viewed" => page(on, 1),
                        _ => page(on, 2 + round),
                    };
                    (event, entity)
                }
            };
            sent += 1;
            match site.webhook(event, entity).await {
                Ok(status) => tracing::info!(
                    event, status, client_key = %site.client_key,
                    "demo: Confluence sent a webhook"
                ),
                Err(error) => tracing::warn!(event, %error, "demo: webhook not delivered"),
            }
            // The Forge site mirrors the page events, in Forge's names and shapes.
            if let (Some(forge_site), Some(forge_event)) = (
                &forge_site,
                tributary_common::forge::forge_names_of(event)
                    .next()
                    .filter(|_| event.starts_with("page_")),
            ) {
                forge_site.deliver_page(forge_event, sent).await;
            }
            let pace = if !script.as_slice().is_empty() {
                SCRIPT_PACE
            } else {
                self.options.steady_pace
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(pace) => {}
            }
        }
    }
}

/// Logs what the simulated Confluence saw of acting as a user: each grant its authorization
/// server answered, and each REST call that came with a user's bearer token (whose user the
/// simulator knows from the grant, not from anything the caller claimed).
async fn report_user_calls(simulator: Simulator, shutdown: Shutdown) {
    let authorization_server = simulator.authorization_server();
    let mut grants_reported = 0;
    let mut calls_reported = HashSet::new();
    loop {
        let grants = authorization_server.grants();
        for grant in grants.iter().skip(grants_reported) {
            match grant {
                Ok(account_id) => tracing::info!(
                    user = %account_id,
                    "demo: the simulated authorization server granted a user token"
                ),
                Err(reason) => tracing::warn!(
                    %reason,
                    "demo: the simulated authorization server refused a user-token grant"
                ),
            }
        }
        grants_reported = grants.len();
        for call in simulator.calls_as_users() {
            if !calls_reported.insert(call.seq) {
                continue;
            }
            let Caller::User(account_id) = &call.caller else {
                continue;
            };
            match &call.verdict {
                Verdict::Accepted => tracing::info!(
                    method = %call.method, target = %call.target, user = %account_id,
                    client_key = %call.client_key.as_deref().unwrap_or_default(),
                    "demo: the simulated Confluence took a call with the bearer token granted to the user"
                ),
                Verdict::Refused(reason) => tracing::warn!(
                    method = %call.method, target = %call.target, user = %account_id, %reason,
                    "demo: the simulated Confluence refused a user's bearer token"
                ),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(USER_CALL_POLL) => {}
        }
    }
}

/// The pages of the demo's Forge site.
const FORGE_PAGES: [(&str, &str); 2] = [
    ("75601", "Forge: design review"),
    ("75602", "Forge: runbook"),
];

/// The demo Forge key, its JWKS on loopback, and the installation on a site the simulator
/// serves through its API gateway.
async fn start_forge(
    app_id: &str,
    simulator: &Simulator,
) -> anyhow::Result<(ForgeInstallation, JwksServer)> {
    let kid = format!(
        "forge/invocation-token/demo-{}",
        uuid::Uuid::new_v4().simple()
    );
    let key = tokio::task::spawn_blocking(move || InstallKey::generate(&kid))
        .await
        .context("generating the demo Forge key")??;
    let jwks = JwksServer::bind(([127, 0, 0, 1], 0).into(), &[&key])
        .await
        .context("starting the demo JWKS server")?;
    let installation = ForgeInstallation::new(
        &tributary_common::forge::app_ari(app_id),
        &simulator.forge_api_origin(),
        key,
    );
    Ok((installation, jwks))
}

/// The demo Forge installation's side: deliveries to `/forge/events`, signed as Forge
/// signs them.
struct ForgeSite<'a> {
    forge: &'a ForgeInstallation,
    http: &'a reqwest::Client,
    ingest: &'a str,
}

impl<'a> ForgeSite<'a> {
    fn new(
        demo: &Demo,
        forge: &'a ForgeInstallation,
        http: &'a reqwest::Client,
        ingest: &'a str,
    ) -> ForgeSite<'a> {
        let tenant_key = site_tenant_key(&forge.cloud_id);
        demo.simulator
            .register_forge(&forge.cloud_id, &forge.system_token, &tenant_key);
        for (id, title) in FORGE_PAGES {
            demo.simulator.add_page(&tenant_key, id, SPACE_ID, title);
        }
        ForgeSite {
            forge,
            http,
            ingest,
        }
    }

    async fn deliver_lifecycle(&self, event: &str) {
        self.deliver(&self.forge.lifecycle_event(event)).await;
    }

    /// A page event on one of the Forge site's pages, chosen by `round`.
    async fn deliver_page(&self, event: &str, round: u64) {
        let (id, title) = FORGE_PAGES[(round as usize) % FORGE_PAGES.len()];
        self.deliver(&self.forge.content_event(event, "page", id, title))
            .await;
    }

    async fn deliver(&self, body: &Value) {
        let event = body["eventType"].as_str().unwrap_or_default().to_string();
        let sent = async {
            let fit = self.forge.fit()?;
            let response = self
                .http
                .post(format!(
                    "{}{}",
                    self.ingest,
                    tributary_devkit::forge::FORGE_EVENTS_PATH
                ))
                .header("authorization", format!("Bearer {fit}"))
                .header("x-forge-oauth-system", &self.forge.system_token)
                .json(body)
                .send()
                .await?;
            anyhow::Ok(response.status().as_u16())
        };
        match sent.await {
            Ok(status) => tracing::info!(event, status, "demo: Forge delivered an event"),
            Err(error) => tracing::warn!(event, %error, "demo: Forge event not delivered"),
        }
    }
}

/// The demo tenant's side of the conversation with the ingest.
struct Site {
    http: reqwest::Client,
    ingest: String,
    client_key: String,
    secret: SharedSecret,
}

impl Site {
    /// The OAuth client id Confluence gives an app installed with `ACT_AS_USER`.
    fn oauth_client_id(&self) -> String {
        format!("{}-oauth-client", self.client_key)
    }

    /// `installed` (RS256, signed as Atlassian signs installs) then `enabled` (HS256), as
    /// Confluence sends them. The ingest may still be starting: connection failures and
    /// 503s are retried for up to two minutes.
    async fn install(&self, demo: &Demo, audience: &str, app_key: &str) -> anyhow::Result<()> {
        let body = json!({
            "key": app_key,
            "clientKey": self.client_key,
            "sharedSecret": self.secret.expose(),
            "baseUrl": demo.site_url(),
            "displayUrl": demo.site_url(),
            "productType": "confluence",
            "description": "Tributary demo site (simulated)",
            "serverVersion": "6452",
            "pluginsVersion": "1000.0.0",
            "oauthClientId": self.oauth_client_id(),
            "eventType": "installed",
        });
        let path = "/lifecycle/installed";
        let send_install = || async {
            let token = demo
                .key
                .sign(
                    &Token::signed_install(&self.client_key, audience)
                        .claim("sub", USER)
                        .for_request("POST", path),
                )
                .map_err(PostError::fatal)?;
            self.post(path, &token, &body).await
        };
        send_install
            .retry(
                ConstantBuilder::default()
                    .with_delay(Duration::from_millis(250))
                    .with_max_times(480),
            )
            .when(|error: &PostError| error.worth_retrying)
            .await?;
        let mut enabled = body;
        enabled["eventType"] = json!("enabled");
        if let Some(fields) = enabled.as_object_mut() {
            fields.remove("sharedSecret");
        }
        let path = "/lifecycle/enabled";
        Ok(self.post(path, &self.hs256(path)?, &enabled).await?)
    }

    async fn webhook(&self, event: &str, entity: Value) -> anyhow::Result<u16> {
        let path = format!("/webhooks/{event}");
        let mut body = json!({
            "userAccountId": USER,
            "accountType": "customer",
            "timestamp": chrono::Utc::now().timestamp_millis(),
        });
        if let (Some(fields), Some(entity)) = (body.as_object_mut(), entity.as_object()) {
            fields.extend(entity.clone());
        }
        let response = self
            .http
            .post(format!("{}{path}", self.ingest))
            .header("authorization", format!("JWT {}", self.hs256(&path)?))
            .json(&body)
            .send()
            .await?;
        Ok(response.status().as_u16())
    }

    /// A token as Confluence signs webhooks and `enabled`: HS256 with the shared secret.
    fn hs256(&self, path: &str) -> anyhow::Result<String> {
        Ok(Token::from_confluence(&self.client_key)
            .claim("sub", USER)
            .for_request("POST", path)
            .hs256(self.secret.expose())?)
    }

    /// POSTs a lifecycle callback.
    async fn post(&self, path: &str, token: &str, body: &Value) -> Result<(), PostError> {
        let response = self
            .http
            .post(format!("{}{path}", self.ingest))
            .header("authorization", format!("JWT {token}"))
            .json(body)
            .send()
            .await
            .map_err(|error| PostError {
                worth_retrying: error.is_connect() || error.is_timeout(),
                message: format!("{path}: {error}"),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        Err(PostError {
            // The ingest answers 503 while its database or broker is not ready yet.
            worth_retrying: status.as_u16() == 503,
            message: format!("{path} answered {status}: {text}"),
        })
    }
}

/// A lifecycle callback the ingest did not take.
#[derive(Debug)]
struct PostError {
    worth_retrying: bool,
    message: String,
}

impl PostError {
    fn fatal(error: impl std::fmt::Display) -> PostError {
        PostError {
            worth_retrying: false,
            message: error.to_string(),
        }
    }
}

impl std::fmt::Display for PostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PostError {}

fn page((id, title): (&str, &str), version: u64) -> Value {
    let now = chrono::Utc::now().timestamp_millis();
    let mut body = json!({
        "page": {
            "id": id.parse::<u64>().unwrap_or_default(),
            "idAsString": id,
            "spaceKey": SPACE_KEY,
            "spaceId": SPACE_ID,
            "title": title,
            "creatorAccountId": USER,
            "lastModifierAccountId": USER,
            "version": version,
            "creationDate": now,
            "modificationDate": now,
            "contentType": "page",
        },
        "suppressNotifications": false,
    });
    if version > 1 {
        body["updateTrigger"] = json!("edit_page");
    }
    body
}

fn comment(on: (&str, &str)) -> Value {
    let mut parent = page(on, 1);
    json!({
        "comment": {
            "id": 131073,
            "idAsString": "131073",
            "spaceKey": SPACE_KEY,
            "title": format!("Re: {}", on.1),
            "creatorAccountId": USER,
            "version": 1,
            "contentType": "comment",
            "parent": parent["page"].take(),
        }
    })
}

fn label(on: (&str, &str)) -> Value {
    let mut content = page(on, 2);
    json!({
        "label": { "name": "onboarding", "id": "1", "prefix": "global", "title": "onboarding" },
        "labeled": content["page"].take(),
    })
}
