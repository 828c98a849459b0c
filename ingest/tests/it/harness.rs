//! A world to run the ingest in: mock Kafka, a database of the test's own, a key server,
//! and helpers that speak to the ingest the way Confluence does.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tributary_common::Config;
use tributary_common::shutdown::Shutdown;
use tributary_devkit::kafka::read_topic;
use tributary_devkit::{
    INSTALL_KEY_1, INSTALL_PUB_1, KeyServer, MockKafka, TestDatabase, Token, test_secret_key_base64,
};
use tributary_ingest::IngestError;

pub const APP_KEY: &str = "com.example.tributary";
pub const APP_BASE_URL: &str = "https://app.example.com";
pub const KID: &str = "install-key-1";
pub const EVENTS_TOPIC: &str = "tributary.events";
pub const LIFECYCLE_TOPIC: &str = "tributary.lifecycle";
pub const VIEWS_TOPIC: &str = "tributary.views";
pub const PUBLISH_TIMEOUT_MS: u64 = 1500;
pub const RETRY_AFTER_SECONDS: &str = "7";

pub struct World {
    pub kafka: Arc<MockKafka>,
    pub db: TestDatabase,
    pub keys: KeyServer,
}

impl World {
    pub async fn start() -> World {
        let kafka = Arc::new(MockKafka::start(1));
        kafka.create_topic(EVENTS_TOPIC, 3);
        kafka.create_topic(LIFECYCLE_TOPIC, 1);
        kafka.create_topic(VIEWS_TOPIC, 1);
        World {
            kafka,
            db: TestDatabase::create().await,
            keys: KeyServer::start(&[(KID, INSTALL_PUB_1)]).await,
        }
    }

    /// Settings for an ingest in this world; `extra` overrides them.
    pub fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("TRIBUTARY_DATABASE_URL", self.db.url.clone()),
            (
                "TRIBUTARY_KAFKA_BROKERS",
                self.kafka.bootstrap_servers().to_string(),
            ),
            ("TRIBUTARY_SECRET_KEY", test_secret_key_base64()),
            ("TRIBUTARY_INSTALL_KEYS_URL", self.keys.url()),
            ("TRIBUTARY_APP_BASE_URL", APP_BASE_URL.to_string()),
            (
                "TRIBUTARY_INGEST_PUBLISH_TIMEOUT_MS",
                PUBLISH_TIMEOUT_MS.to_string(),
            ),
            (
                "TRIBUTARY_INGEST_RETRY_AFTER_SECONDS",
                RETRY_AFTER_SECONDS.to_string(),
            ),
            (
                "TRIBUTARY_TOPIC_ROUTES",
                format!(
                    "installed={LIFECYCLE_TOPIC},uninstalled={LIFECYCLE_TOPIC},\
                     enabled={LIFECYCLE_TOPIC},disabled={LIFECYCLE_TOPIC},*_viewed={VIEWS_TOPIC}"
                ),
            ),
            ("TRIBUTARY_SHUTDOWN_TIMEOUT_SECONDS", "10".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (key, value) in extra {
            env.retain(|(k, _)| k != key);
            env.push((key.to_string(), value.to_string()));
        }
        env
    }

    pub async fn ingest(&self, extra: &[(&str, &str)]) -> Ingest {
        Ingest::start(self.env(extra)).await
    }

    /// Every record on `topic`, read from the beginning.
    pub async fn records(&self, topic: &str) -> Vec<OwnedMessage> {
        read_topic(
            self.kafka.bootstrap_servers(),
            topic,
            Duration::from_secs(20),
        )
        .await
    }

    pub async fn broker_down(&self) {
        let kafka = self.kafka.clone();
        tokio::task::spawn_blocking(move || kafka.broker_down())
            .await
            .expect("broker down");
    }

    pub async fn broker_up(&self) {
        let kafka = self.kafka.clone();
        tokio::task::spawn_blocking(move || kafka.broker_up())
            .await
            .expect("broker up");
    }
}

pub use tributary_devkit::kafka::header_text as header;

pub fn payload_text(message: &OwnedMessage) -> String {
    String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned()
}

/// One ingest running in this process.
pub struct Ingest {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub metrics_url: String,
    pub http: reqwest::Client,
    shutdown: Shutdown,
    task: JoinHandle<Result<(), IngestError>>,
}

impl Ingest {
    pub async fn start(env: Vec<(String, String)>) -> Ingest {
        let config = Config::load_from(None, env).expect("test configuration is valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let metrics = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metrics");
        let addr = listener.local_addr().expect("address");
        let metrics_url = format!("http://{}", metrics.local_addr().expect("address"));
        let shutdown = Shutdown::new();
        let task = tokio::spawn(tributary_ingest::run(
            config,
            listener,
            metrics,
            shutdown.clone(),
        ));
        Ingest {
            url: format!("http://{addr}"),
            addr,
            metrics_url,
            http: reqwest::Client::new(),
            shutdown,
            task,
        }
    }

    /// Fires the shutdown signal and waits for the service to return.
    pub async fn stop(self) -> Result<(), IngestError> {
        self.shutdown.cancel();
        self.task.await.expect("ingest task")
    }

    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    pub async fn send(&self, request: &Raw) -> reqwest::Response {
        let mut builder = self.http.request(
            request.method.clone(),
            format!("{}{}", self.url, request.target),
        );
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder
            .body(request.body.clone())
            .send()
            .await
            .expect("ingest answers")
    }

    pub async fn install(&self, tenant: &Tenant) -> reqwest::Response {
        self.send(&signed_install(tenant, install_body(tenant, "installed")))
            .await
    }

    pub async fn uninstall(&self, tenant: &Tenant) -> reqwest::Response {
        let target = "/lifecycle/uninstalled";
        let token = install_token(&tenant.client_key, target, APP_BASE_URL, KID, INSTALL_KEY_1);
        self.send(&Raw::post(target, &install_body(tenant, "uninstalled")).token(&token))
            .await
    }

    /// `enabled` or `disabled`, HS256 with the tenant's secret.
    pub async fn notify(&self, tenant: &Tenant, kind: &str) -> reqwest::Response {
        let target = format!("/lifecycle/{kind}");
        let token = tenant.token(&target);
        self.send(&Raw::post(&target, &install_body(tenant, kind)).token(&token))
            .await
    }

    pub async fn webhook(&self, tenant: &Tenant, event: &str, body: &[u8]) -> reqwest::Response {
        self.send(&webhook_request(tenant, event, body)).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("ingest answers")
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.metrics_url))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }
}

/// A request as the test means to send it.
#[derive(Clone, Debug)]
pub struct Raw {
    pub method: reqwest::Method,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn post(target: &str, body: &Value) -> Raw {
        Raw::post_bytes(target, body.to_string().into_bytes())
    }

    pub fn post_bytes(target: &str, body: Vec<u8>) -> Raw {
        Raw {
            method: reqwest::Method::POST,
            target: target.to_string(),
            headers: vec![(CONTENT_TYPE.to_string(), "application/json".to_string())],
            body,
        }
    }

    pub fn token(mut self, token: &str) -> Raw {
        self.headers
            .push((AUTHORIZATION.to_string(), format!("JWT {token}")));
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Raw {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// A Confluence site installing the app.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub client_key: String,
    pub secret: String,
    pub base_url: String,
}

impl Tenant {
    pub fn new(site: &str) -> Tenant {
        Tenant {
            client_key: format!("{site}-{}", uuid::Uuid::new_v4()),
            secret: format!("secret-{}-{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4()),
            base_url: format!("https://{site}.atlassian.net/wiki"),
        }
    }

    /// The same site with a rotated shared secret.
    pub fn rotated(&self) -> Tenant {
        Tenant {
            secret: format!("rotated-{}", uuid::Uuid::new_v4()),
            ..self.clone()
        }
    }

    /// An HS256 token for `target` (path and query), valid for three minutes.
    pub fn token(&self, target: &str) -> String {
        Token::from_confluence(&self.client_key)
            .for_request("POST", target)
            .hs256(&self.secret)
            .expect("sign")
    }
}

pub fn install_body(tenant: &Tenant, event_type: &str) -> Value {
    let mut body = json!({
        "key": APP_KEY,
        "clientKey": tenant.client_key,
        "baseUrl": tenant.base_url,
        "displayUrl": tenant.base_url,
        "productType": "confluence",
        "description": "Atlassian Confluence at https://example.atlassian.net/wiki",
        "eventType": event_type,
        "serverVersion": "6452",
        "pluginsVersion": "1001.0.0",
    });
    if event_type == "installed" {
        body["sharedSecret"] = Value::from(tenant.secret.clone());
    }
    body
}

pub fn install_token(
    client_key: &str,
    target: &str,
    audience: &str,
    kid: &str,
    key: &str,
) -> String {
    Token::signed_install(client_key, audience)
        .for_request("POST", target)
        .rs256(kid, key)
        .expect("sign")
}

/// An `installed` callback with `body`, signed by "Atlassian" for this app.
pub fn signed_install(tenant: &Tenant, body: Value) -> Raw {
    let target = "/lifecycle/installed";
    let token = install_token(&tenant.client_key, target, APP_BASE_URL, KID, INSTALL_KEY_1);
    Raw::post(target, &body).token(&token)
}

pub fn webhook_request(tenant: &Tenant, event: &str, body: &[u8]) -> Raw {
    let target = format!("/webhooks/{event}");
    let token = tenant.token(&target);
    Raw::post_bytes(&target, body.to_vec()).token(&token)
}

/// The JSON error code of a refusal.
pub async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("JSON error body");
    body["error"].as_str().unwrap_or_default().to_string()
}

pub fn page_event(marker: &str) -> Vec<u8> {
    json!({
        "page": { "id": 4242, "idAsString": "4242", "spaceKey": "DEV", "title": marker },
        "userAccountId": "557058:abc",
        "timestamp": 1_700_000_000_000u64,
    })
    .to_string()
    .into_bytes()
}
