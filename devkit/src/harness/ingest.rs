//! An ingest running in a [`super::World`], in this process or as a child, and a client
//! that speaks to it the way Confluence does: signed installs, JWT-signed webhooks, and a
//! careful sender that retries 503s.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tributary_common::Config;
use tributary_common::shutdown::Shutdown;

use super::{BoxError, Raw, Service, Tenant, World};
use crate::pg_cluster::free_port;

/// How long a child ingest has to stop after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// A running ingest and a client for it.
pub struct Ingest {
    pub url: String,
    pub addr: SocketAddr,
    pub metrics_url: String,
    pub http: reqwest::Client,
    running: Running,
}

enum Running {
    InProcess {
        shutdown: Shutdown,
        task: JoinHandle<Result<(), BoxError>>,
    },
    Child(Service),
}

/// An answer, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Tributary-Event-Id` of an accepted webhook.
    pub fn event_id(&self) -> Option<&str> {
        self.header("tributary-event-id")
    }

    pub fn retry_after(&self) -> Option<u64> {
        self.header("retry-after").and_then(|v| v.parse().ok())
    }

    pub fn text(&self) -> &str {
        &self.body
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(&self.body)
    }

    /// The `error` code of a refusal (empty when the answer has none).
    pub fn code(&self) -> String {
        self.json::<Value>()
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// One webhook as a careful sender saw it end.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub sequence: u64,
    pub client_key: String,
    /// The `Tributary-Event-Id` of the 204, when it was acknowledged.
    pub event_id: Option<String>,
    pub attempts: u32,
    pub last_status: u16,
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

impl Ingest {
    /// Runs `run` (the ingest's entry point) with `env` on free loopback ports.
    pub(super) async fn in_process(
        env: Vec<(String, String)>,
        run: &(
             dyn Fn(Config, TcpListener, TcpListener, Shutdown) -> super::IngestTask + Send + Sync
         ),
    ) -> Ingest {
        let config = Config::load_from(None, env).expect("test configuration is valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let metrics = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metrics");
        let addr = listener.local_addr().expect("address");
        let metrics_url = format!("http://{}", metrics.local_addr().expect("address"));
        let shutdown = Shutdown::new();
        let task = tokio::spawn(run(config, listener, metrics, shutdown.clone()));
        Ingest {
            url: format!("http://{addr}"),
            addr,
            metrics_url,
            http: http_client(),
            running: Running::InProcess { shutdown, task },
        }
    }

    /// Starts `tributary-ingest` on free loopback ports and waits until it answers
    /// `/healthz`.
    pub(super) async fn child(world: &World, extra: &[(&str, &str)]) -> Ingest {
        let listen = format!("127.0.0.1:{}", free_port());
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut settings = extra.to_vec();
        settings.extend([
            ("TRIBUTARY_INGEST_LISTEN", listen.as_str()),
            ("TRIBUTARY_METRICS_LISTEN", metrics.as_str()),
        ]);
        let mut service = world.service("tributary-ingest", &settings);
        let http = http_client();
        let url = format!("http://{listen}");
        for _ in 0..300 {
            if let Ok(answer) = http.get(format!("{url}/healthz")).send().await
                && answer.status().is_success()
            {
                return Ingest {
                    addr: listen.parse().expect("listen address"),
                    url,
                    metrics_url: format!("http://{metrics}"),
                    http,
                    running: Running::Child(service),
                };
            }
            assert!(
                service.running(),
                "the ingest exited at start:\n{}",
                service.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the ingest never served:\n{}", service.log_tail(40));
    }

    /// Sends the stop signal (SIGTERM to a child) without waiting for the stop.
    pub fn begin_stop(&self) {
        match &self.running {
            Running::InProcess { shutdown, .. } => shutdown.cancel(),
            Running::Child(service) => service.signal_terminate(),
        }
    }

    /// Sends the stop signal and waits for the ingest to return (or exit) cleanly.
    pub async fn stop(self) -> Result<(), String> {
        self.begin_stop();
        match self.running {
            Running::InProcess { task, .. } => task
                .await
                .map_err(|e| format!("the ingest task failed: {e}"))?
                .map_err(|e| e.to_string()),
            Running::Child(mut service) => {
                let status = tokio::task::spawn_blocking(move || {
                    let status = service.wait_exit(STOP_DEADLINE);
                    (status, service.log_tail(40))
                })
                .await
                .map_err(|e| e.to_string())?;
                match status {
                    (Some(status), _) if status.success() => Ok(()),
                    (status, log) => Err(format!("the ingest stopped with {status:?}:\n{log}")),
                }
            }
        }
    }

    /// The end of a child's log (empty in this process: its log is the test's output).
    pub fn log_tail(&self, lines: usize) -> String {
        match &self.running {
            Running::InProcess { .. } => String::new(),
            Running::Child(service) => service.log_tail(lines),
        }
    }

    /// A child's resident memory in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        match &self.running {
            Running::InProcess { .. } => None,
            Running::Child(service) => service.rss_kib(),
        }
    }

    /// Sends `request`; `Err` when the connection failed or was closed without an answer.
    pub async fn try_send(&self, request: &Raw) -> Result<Answer, reqwest::Error> {
        let mut builder = self.http.request(
            request.method.clone(),
            format!("{}{}", self.url, request.target),
        );
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let response = builder.body(request.body.clone()).send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Sends `request` and reads the answer (panics without one).
    pub async fn send(&self, request: &Raw) -> Answer {
        self.try_send(request).await.expect("the ingest answers")
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(&Raw::get(path)).await
    }

    /// A signed install of `tenant`.
    pub async fn install(&self, tenant: &Tenant) -> Answer {
        self.send(&tenant.install_request()).await
    }

    /// A signed uninstall of `tenant`.
    pub async fn uninstall(&self, tenant: &Tenant) -> Answer {
        self.send(&tenant.uninstall_request()).await
    }

    /// `enabled` or `disabled`, HS256 with the tenant's secret.
    pub async fn notify(&self, tenant: &Tenant, kind: &str) -> Answer {
        self.send(&tenant.lifecycle_request(kind)).await
    }

    pub async fn webhook(&self, tenant: &Tenant, event: &str, body: &[u8]) -> Answer {
        self.send(&tenant.webhook_request(event, body)).await
    }

    /// The ingest's metrics text (empty when they cannot be read).
    pub async fn metrics(&self) -> String {
        match self
            .http
            .get(format!("{}/metrics", self.metrics_url))
            .send()
            .await
        {
            Ok(answer) => answer.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Sends webhook `sequence` of `tenant` until it is acknowledged, waiting out 503s (at
    /// least their Retry-After) and connection failures, for at most `attempts` tries.
    pub async fn deliver(&self, tenant: &Tenant, sequence: u64, attempts: u32) -> Delivery {
        let mut delivery = Delivery {
            sequence,
            client_key: tenant.client_key.clone(),
            event_id: None,
            attempts: 0,
            last_status: 0,
        };
        while delivery.attempts < attempts {
            delivery.attempts += 1;
            let request = tenant.webhook_request("page_updated", &tenant.page_event(sequence));
            let wait = match self.try_send(&request).await {
                Ok(answer) if answer.status() == 204 => {
                    delivery.last_status = 204;
                    delivery.event_id = answer.event_id().map(str::to_string);
                    return delivery;
                }
                Ok(answer) if answer.status() == 503 => {
                    delivery.last_status = 503;
                    Duration::from_secs(answer.retry_after().unwrap_or(1))
                }
                Ok(answer) => {
                    // Anything else is final: a careful sender does not repeat a refusal.
                    delivery.last_status = answer.status().as_u16();
                    return delivery;
                }
                Err(_) => {
                    delivery.last_status = 0;
                    Duration::from_millis(500)
                }
            };
            tokio::time::sleep(wait).await;
        }
        delivery
    }
}
