//! What every test here shares: a mock cluster with the topics made, a database, settings,
//! publishing and a running processor.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tributary_common::Config;
use tributary_common::envelope::{Envelope, EventKind, subject_of};
use tributary_common::forge::SystemToken;
use tributary_common::kafka::envelope_headers;
use tributary_common::shutdown::Shutdown;
use tributary_common::store::{ForgeStore, InvocationRecord, site_tenant_key};
use tributary_devkit::confluence::{Simulator, SimulatorSettings};
use tributary_devkit::{MockKafka, TestDatabase, test_keyring, test_secret_key_base64};
use tributary_processor::{ProcessorBuilder, ProcessorError, ProcessorStatus};

pub const TOPIC: &str = "events";
pub const DLQ_TOPIC: &str = "events.dlq";

pub struct Harness {
    pub kafka: MockKafka,
    pub db: TestDatabase,
}

impl Harness {
    pub async fn start(partitions: i32) -> Harness {
        let kafka = MockKafka::start(1);
        kafka.create_topic(TOPIC, partitions);
        kafka.create_topic(DLQ_TOPIC, 1);
        Harness {
            kafka,
            db: TestDatabase::create().await,
        }
    }

    pub fn pool(&self) -> PgPool {
        self.db.pool.clone()
    }

    /// The settings a test processor runs with, as environment pairs (child processes take
    /// them as they are).
    pub fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = [
            ("KAFKA_BROKERS", self.kafka.bootstrap_servers()),
            ("DATABASE_URL", self.db.url.as_str()),
            ("SECRET_KEY", test_secret_key_base64().as_str()),
            ("PROCESSOR_TOPICS", TOPIC),
            ("PROCESSOR_GROUP_ID", "test-group"),
            ("METRICS_LISTEN", "127.0.0.1:0"),
            ("PROCESSOR_COMMIT_INTERVAL_MS", "200"),
            ("PROCESSOR_RETRY_INITIAL_MS", "10"),
            ("PROCESSOR_RETRY_MAX_MS", "100"),
            ("SHUTDOWN_TIMEOUT_SECONDS", "10"),
        ]
        .iter()
        .map(|(k, v)| (format!("TRIBUTARY_{k}"), v.to_string()))
        .collect();
        for (k, v) in extra {
            pairs.retain(|(key, _)| *key != format!("TRIBUTARY_{k}"));
            pairs.push((format!("TRIBUTARY_{k}"), v.to_string()));
        }
        pairs
    }

    pub fn config(&self, extra: &[(&str, &str)]) -> Config {
        Config::load_from(None, self.env(extra)).expect("test settings are valid")
    }

    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", self.kafka.bootstrap_servers())
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()
            .expect("producer")
    }

    /// Publishes `envelopes` to the events topic, in order, and waits for every ack.
    pub async fn publish(&self, envelopes: &[Envelope]) {
        self.publish_to(TOPIC, envelopes).await
    }

    /// Publishes `envelopes` to `topic`, in order, and waits for every ack.
    pub async fn publish_to(&self, topic: &str, envelopes: &[Envelope]) {
        send_all(&self.producer(), topic, envelopes).await
    }

    /// Publishes a record that is not an event envelope.
    pub async fn publish_raw(&self, key: &str, value: &[u8]) {
        self.producer()
            .send(
                FutureRecord::to(TOPIC).key(key).payload(value),
                Duration::from_secs(10),
            )
            .await
            .expect("record delivered");
    }

    /// Every record on the dead-letter topic now.
    pub async fn dead_letters(&self) -> Vec<OwnedMessage> {
        let bootstrap = self.kafka.bootstrap_servers().to_string();
        tokio::task::spawn_blocking(move || {
            tributary_devkit::kafka::read_all(&bootstrap, DLQ_TOPIC, Duration::from_secs(10))
        })
        .await
        .expect("reader")
    }

    pub fn spawn(&self, builder: ProcessorBuilder) -> Running {
        Running::spawn(builder.database(self.pool()))
    }
}

pub struct Running {
    shutdown: Shutdown,
    status: tokio::sync::watch::Receiver<Option<ProcessorStatus>>,
    task: JoinHandle<Result<(), ProcessorError>>,
}

impl Running {
    fn spawn(builder: ProcessorBuilder) -> Running {
        let shutdown = Shutdown::new();
        let (status_tx, status) = tokio::sync::watch::channel(None);
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let processor = builder.build().await?;
            let _ = status_tx.send(Some(processor.status()));
            processor.run(stop).await
        });
        Running {
            shutdown,
            status,
            task,
        }
    }

    pub fn assigned(&self) -> Vec<(String, i32)> {
        self.status
            .borrow()
            .as_ref()
            .map(ProcessorStatus::assigned_partitions)
            .unwrap_or_default()
    }

    /// Waits for the processor to stop by itself.
    pub async fn join(self, timeout: Duration) -> Result<(), ProcessorError> {
        tokio::time::timeout(timeout, self.task)
            .await
            .expect("processor stopped by itself")
            .expect("processor task")
    }

    /// A crash, in-process: the processor stops wherever it is, finishing, committing and
    /// storing nothing more.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// SIGTERM, in-process: stop, drain, commit, leave.
    pub async fn stop(self) -> Result<(), ProcessorError> {
        self.shutdown.cancel();
        self.task.await.expect("processor task")
    }
}

/// A webhook event for `tenant`.
pub fn webhook(tenant: &str, name: &str, body: Value) -> Envelope {
    Envelope::new(
        EventKind::Webhook(name.into()),
        tenant,
        &format!("https://{tenant}.atlassian.net/wiki"),
        Bytes::from(body.to_string()),
    )
    .with_subject(tributary_common::envelope::subject_of(&body))
}

/// Polls `check` until it holds; panics naming `what` after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many events `handler` has recorded as handled.
pub async fn handled_count(pool: &PgPool, handler: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM handled_events WHERE handler = $1")
        .bind(handler)
        .fetch_one(pool)
        .await
        .expect("count handled events")
}

pub use tributary_devkit::kafka::header_text as header;

/// A simulated Forge site `cloud_id` with page 42 in space 7, its installation (app system
/// token `system_token`) recorded, and a `page_created` Forge event for page 42 published.
/// The site and the tenant key the installation is known by.
pub async fn forge_site_with_a_page_event(
    harness: &Harness,
    stop: &Shutdown,
    cloud_id: &str,
    system_token: &str,
) -> (Simulator, String) {
    let confluence = Simulator::start(
        SimulatorSettings::new("com.example.tributary"),
        stop.clone(),
    )
    .await
    .expect("simulated Confluence");
    let tenant_key = site_tenant_key(cloud_id);
    confluence.register_forge(cloud_id, system_token, &tenant_key);
    confluence.add_page(&tenant_key, "42", "7", "Home");
    let api_base_url = format!("{}/ex/confluence/{cloud_id}", confluence.forge_api_origin());
    let installation_id = format!("ari:cloud:ecosystem::installation/{cloud_id}");
    ForgeStore::new(harness.pool(), test_keyring())
        .record_invocation(
            &InvocationRecord {
                installation_id: &installation_id,
                cloud_id: Some(cloud_id),
                api_base_url: &api_base_url,
                app_id: "ari:cloud:ecosystem::app/6a1b8ac2-4f5e-4a2b-9c47-2f9f8e7d6c5b",
                environment_type: Some("PRODUCTION"),
            },
            Some((&SystemToken::new(system_token), i64::MAX / 2)),
        )
        .await
        .expect("installation recorded");
    let body = json!({
        "eventType": "avi:confluence:created:page",
        "atlassianId": "557058:forge",
        "content": {"id": "42", "type": "page", "title": "Home", "space": {"id": 7, "key": "DEV"}},
    });
    let event = Envelope::new(
        EventKind::Forge("avi:confluence:created:page".into()),
        &tenant_key,
        &api_base_url,
        Bytes::from(body.to_string()),
    )
    .with_subject(subject_of(&body));
    harness.publish(&[event]).await;
    (confluence, tenant_key)
}

/// Publishes `envelopes` to `topic` through `producer`, in order, and waits for every ack.
pub async fn send_all(producer: &FutureProducer, topic: &str, envelopes: &[Envelope]) {
    let sends: Vec<_> = envelopes
        .iter()
        .map(|e| {
            producer.send(
                FutureRecord::to(topic)
                    .key(e.key())
                    .payload(e.data.as_ref())
                    .headers(envelope_headers(e)),
                Duration::from_secs(10),
            )
        })
        .collect();
    for sent in futures::future::join_all(sends).await {
        sent.expect("event delivered");
    }
}
