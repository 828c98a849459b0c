//! `tributary dev --demo`: a simulated Confluence site in the same process. It installs a
//! demo tenant through a real signed install (its own RSA key, served by its own key server
//! the ingest is pointed at), enables it, then sends the webhooks a person editing pages
//! would cause; the demo handler calls the simulated REST API back. Beside it, a Forge
//! installation on a site of its own: its own JWKS, signed invocation tokens, `avi:`
//! events, and the simulated API gateway the handler calls back with the system token.

use std::time::Duration;

use anyhow::Context;
use backon::{ConstantBuilder, Retryable};
use serde_json::{Value, json};
use tributary_common::connect::SharedSecret;
use tributary_common::shutdown::Shutdown;
use tributary_common::store::site_tenant_key;
use tributary_devkit::confluence::{Simulator, SimulatorSettings};
use tributary_devkit::forge::{ForgeInstallation, JwksServer};
use tributary_devkit::{InstallKey, KeyServer, Token};

const CLIENT_KEY: &str = "demo-site";
const SPACE_ID: &str = "98305";
const SPACE_KEY: &str = "DEMO";
const USER: &str = "557058:demo-user";
/// Pause between the scripted webhooks, and between the later ones.
const SCRIPT_PACE: Duration = Duration::from_millis(800);
const LATER_PACE: Duration = Duration::from_secs(10);
/// The Forge app the demo plays, unless `forge_app_id` is set.
pub const DEMO_FORGE_APP_ID: &str = "ari:cloud:ecosystem::app/7d3e0c51-1f0a-4b6e-9d8c-0000000de4f0";

/// The demo's moving parts, started before the configuration is final: the ingest must
/// know the key server's and the simulator's addresses.
pub struct Demo {
    key: InstallKey,
    key_server: String,
    simulator: Simulator,
    forge: ForgeInstallation,
    jwks: JwksServer,
}

impl Demo {
    pub async fn start(
        app_key: &str,
        forge_app_id: &str,
        shutdown: Shutdown,
    ) -> anyhow::Result<Demo> {
        let kid = format!("demo-{}", uuid::Uuid::new_v4().simple());
        let key = tokio::task::spawn_blocking(move || InstallKey::generate(&kid))
            .await
            .context("generating the demo install key")??;
        let fit_kid = format!(
            "forge/invocation-token/demo-{}",
            uuid::Uuid::new_v4().simple()
        );
        let fit_key = tokio::task::spawn_blocking(move || InstallKey::generate(&fit_kid))
            .await
            .context("generating the demo Forge key")??;
        let jwks = JwksServer::bind(([127, 0, 0, 1], 0).into(), &[&fit_key])
            .await
            .context("starting the demo JWKS server")?;
        let key_server =
            KeyServer::bind(([127, 0, 0, 1], 0).into(), &[(key.kid(), key.public_pem())])
                .await
                .context("starting the demo install-key server")?;
        let simulator = Simulator::start(SimulatorSettings::new(app_key), shutdown)
            .await
            .context("starting the simulated Confluence")?;
        let forge = ForgeInstallation::new(
            &tributary_common::forge::app_ari(forge_app_id),
            &simulator.forge_api_origin(),
            fit_key,
        );
        Ok(Demo {
            key,
            key_server: key_server.url(),
            simulator,
            forge,
            jwks,
        })
    }

    /// The JWKS the ingest verifies the demo's invocation tokens with.
    pub fn jwks_url(&self) -> String {
        self.jwks.url()
    }

    /// The install-key server to put first in `install_keys_url`.
    pub fn key_server_url(&self) -> &str {
        &self.key_server
    }

    /// The simulated site's base URL (`http://127.0.0.1:port/wiki`).
    pub fn site_url(&self) -> String {
        self.simulator.base_url()
    }

    /// Installs the demo tenant at the ingest on `ingest` (a local URL), whose app base URL
    /// is `audience`, then sends webhooks until `shutdown` fires.
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
        let site = Site {
            http,
            ingest,
            secret: SharedSecret::new(format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )),
        };
        let pages = [
            ("65601", "Team onboarding"),
            ("65602", "Release notes 1.0"),
            ("65603", "Architecture decisions"),
        ];
        for (id, title) in pages {
            self.simulator.add_page(CLIENT_KEY, id, SPACE_ID, title);
        }
        self.simulator.register(CLIENT_KEY, site.secret.expose());
        let install = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            installed = site.install(&self, &audience, &app_key) => installed,
        };
        install?;
        tracing::info!(
            client_key = CLIENT_KEY, base_url = %self.site_url(),
            "demo tenant installed through a signed install"
        );
        let forge_site = ForgeSite::new(&self, &site);
        forge_site
            .deliver(&self.forge.lifecycle_event("avi:forge:installed:app"))
            .await;

        let mut script = vec![
            ("page_created", page(pages[0], 1)),
            ("page_viewed", page(pages[0], 1)),
            ("comment_created", comment(pages[0])),
            ("page_updated", page(pages[0], 2)),
            ("label_added", label(pages[0])),
            ("page_created", page(pages[1], 1)),
            (
                "search_performed",
                json!({ "query": "release", "results": 2 }),
            ),
            ("page_created", page(pages[2], 1)),
            ("page_viewed", page(pages[1], 1)),
        ]
        .into_iter();
        let mut version = 2;
        loop {
            let (event, entity) = match script.next() {
                Some(next) => next,
                None => {
                    version += 1;
                    ("page_updated", page(pages[0], version))
                }
            };
            match site.webhook(event, entity).await {
                Ok(status) => tracing::info!(event, status, "demo: Confluence sent a webhook"),
                Err(error) => tracing::warn!(event, %error, "demo: webhook not delivered"),
            }
            // The Forge site mirrors the page events, in Forge's names and shapes.
            if let Some(forge_event) = tributary_common::forge::forge_names_of(event)
                .next()
                .filter(|_| event.starts_with("page_"))
            {
                let (id, title) = FORGE_PAGES[version as usize % FORGE_PAGES.len()];
                forge_site
                    .deliver(&self.forge.content_event(forge_event, "page", id, title))
                    .await;
            }
            let pace = if !script.as_slice().is_empty() {
                SCRIPT_PACE
            } else {
                LATER_PACE
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(pace) => {}
            }
        }
    }
}

/// The pages of the demo's Forge site.
const FORGE_PAGES: [(&str, &str); 2] = [
    ("75601", "Forge: design review"),
    ("75602", "Forge: runbook"),
];

/// The demo Forge installation's side: deliveries to `/forge/events`, signed as Forge
/// signs them, on a site the simulator serves through its API gateway.
struct ForgeSite<'a> {
    demo: &'a Demo,
    http: &'a reqwest::Client,
    ingest: &'a str,
}

impl<'a> ForgeSite<'a> {
    fn new(demo: &'a Demo, site: &'a Site) -> ForgeSite<'a> {
        let forge = &demo.forge;
        let tenant_key = site_tenant_key(&forge.cloud_id);
        demo.simulator
            .register_forge(&forge.cloud_id, &forge.system_token, &tenant_key);
        for (id, title) in FORGE_PAGES {
            demo.simulator.add_page(&tenant_key, id, SPACE_ID, title);
        }
        ForgeSite {
            demo,
            http: &site.http,
            ingest: &site.ingest,
        }
    }

    async fn deliver(&self, body: &Value) {
        let event = body["eventType"].as_str().unwrap_or_default().to_string();
        let forge = &self.demo.forge;
        let sent = async {
            let fit = forge.fit()?;
            let response = self
                .http
                .post(format!(
                    "{}{}",
                    self.ingest,
                    tributary_devkit::forge::FORGE_EVENTS_PATH
                ))
                .header("authorization", format!("Bearer {fit}"))
                .header("x-forge-oauth-system", &forge.system_token)
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
    secret: SharedSecret,
}

impl Site {
    /// `installed` (RS256, signed as Atlassian signs installs) then `enabled` (HS256), as
    /// Confluence sends them. The ingest may still be starting: connection failures and
    /// 503s are retried for a while.
    async fn install(&self, demo: &Demo, audience: &str, app_key: &str) -> anyhow::Result<()> {
        let body = json!({
            "key": app_key,
            "clientKey": CLIENT_KEY,
            "sharedSecret": self.secret.expose(),
            "baseUrl": demo.site_url(),
            "displayUrl": demo.site_url(),
            "productType": "confluence",
            "description": "Tributary demo site (simulated)",
            "serverVersion": "6452",
            "pluginsVersion": "1000.0.0",
            "eventType": "installed",
        });
        let path = "/lifecycle/installed";
        let send_install = || async {
            let token = demo
                .key
                .sign(
                    &Token::signed_install(CLIENT_KEY, audience)
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
                    .with_max_times(120),
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
        Ok(Token::from_confluence(CLIENT_KEY)
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
