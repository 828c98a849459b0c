//! A whole Tributary installation for one test: mock Kafka in this process, a PostgreSQL
//! cluster of the test's own, a loopback install-key server, a simulated Confluence, and the
//! real ingest and processor binaries as child processes configured through `TRIBUTARY_*`.

use std::collections::HashMap;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::message::OwnedMessage;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};
use tributary_common::shutdown::Shutdown;
use tributary_devkit::confluence::{Simulator, SimulatorSettings};
use tributary_devkit::kafka::read_topic;
use tributary_devkit::{INSTALL_PUB_1, KeyServer, MockKafka, test_secret_key_base64};

use crate::child::Service;
use crate::ingest::{Ingest, SiteTenant};
use crate::postgres::{PgCluster, free_port};
use crate::{HANDLED_KEY, HANDLER_NAME, run};

pub const APP_KEY: &str = "com.example.tributary.e2e";
pub const APP_BASE_URL: &str = "https://app.example.com";
pub const KID: &str = "e2e-install-key";
pub const EVENTS_TOPIC: &str = "tributary.events";
pub const DLQ_TOPIC: &str = "tributary.events.dlq";
pub const GROUP_ID: &str = "e2e-processors";
/// The Retry-After the ingest sends with its 503s.
pub const RETRY_AFTER_SECONDS: u64 = 1;
/// The test processor binary.
pub const TEST_PROCESSOR: &str = "tributary-test-processor";

pub struct World {
    pub kafka: Arc<MockKafka>,
    pub keys: KeyServer,
    pub confluence: Simulator,
    pub database_url: String,
    pg: Mutex<PgCluster>,
    stop: Shutdown,
}

impl World {
    /// Starts everything but the services, with the events topic in `partitions`
    /// partitions, and migrates the database with `tributary migrate`.
    pub async fn start(partitions: i32) -> World {
        let kafka = Arc::new(MockKafka::start(1));
        kafka.create_topic(EVENTS_TOPIC, partitions);
        kafka.create_topic(DLQ_TOPIC, 1);
        let pg = tokio::task::spawn_blocking(PgCluster::start)
            .await
            .expect("start PostgreSQL");
        let database_url = pg.url("tributary");
        let keys = KeyServer::start(&[(KID, INSTALL_PUB_1)]).await;
        let stop = Shutdown::new();
        let confluence = Simulator::start(SimulatorSettings::new(APP_KEY), stop.clone())
            .await
            .expect("start the simulated Confluence");
        let world = World {
            kafka,
            keys,
            confluence,
            database_url,
            pg: Mutex::new(pg),
            stop,
        };
        let migrated = world.cli(&["migrate"]);
        assert!(
            migrated.status.success(),
            "migrate: {}",
            String::from_utf8_lossy(&migrated.stderr)
        );
        world
    }

    /// The settings every service of this world shares, plus `extra` (names without the
    /// `TRIBUTARY_` prefix).
    pub fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("DATABASE_URL", self.database_url.clone()),
            ("DATABASE_CONNECT_TIMEOUT_SECONDS", "2".into()),
            ("KAFKA_BROKERS", self.kafka.bootstrap_servers().to_string()),
            ("SECRET_KEY", test_secret_key_base64()),
            ("INSTALL_KEYS_URL", self.keys.url()),
            ("APP_KEY", APP_KEY.into()),
            ("APP_BASE_URL", APP_BASE_URL.into()),
            ("TENANT_HOST_ALLOWLIST", "127.0.0.1".into()),
            ("EVENTS_TOPIC", EVENTS_TOPIC.into()),
            ("PROCESSOR_TOPICS", EVENTS_TOPIC.into()),
            ("PROCESSOR_GROUP_ID", GROUP_ID.into()),
            ("SHUTDOWN_TIMEOUT_SECONDS", "10".into()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("TRIBUTARY_{k}"), v))
        .collect();
        for (key, value) in extra {
            let key = format!("TRIBUTARY_{key}");
            env.retain(|(k, _)| *k != key);
            env.push((key, value.to_string()));
        }
        env
    }

    /// Runs the `tributary` command against this world.
    pub fn cli(&self, args: &[&str]) -> Output {
        let env = self.env(&[]);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run("tributary", args, &pairs)
    }

    /// Starts `tributary-ingest` on free loopback ports and waits until it serves.
    pub async fn ingest(&self, extra: &[(&str, &str)]) -> Ingest {
        let listen = format!("127.0.0.1:{}", free_port());
        let metrics = format!("127.0.0.1:{}", free_port());
        let retry_after = RETRY_AFTER_SECONDS.to_string();
        let mut settings = vec![
            ("INGEST_LISTEN", listen.as_str()),
            ("METRICS_LISTEN", metrics.as_str()),
            ("INGEST_PUBLISH_TIMEOUT_MS", "2000"),
            ("INGEST_RETRY_AFTER_SECONDS", retry_after.as_str()),
            ("INGEST_SECRET_CACHE_TTL_SECONDS", "600"),
        ];
        settings.extend_from_slice(extra);
        let service = Service::start("tributary-ingest", &self.env(&settings));
        Ingest::ready(service, &listen, &metrics).await
    }

    /// Starts the test processor (one member of the group).
    pub fn processor(&self, extra: &[(&str, &str)]) -> Service {
        let mut settings = vec![
            ("METRICS_LISTEN", "127.0.0.1:0"),
            ("PROCESSOR_COMMIT_INTERVAL_MS", "200"),
            ("PROCESSOR_RETRY_INITIAL_MS", "50"),
            ("PROCESSOR_RETRY_MAX_MS", "1000"),
            ("CONFLUENCE_RETRY_INITIAL_MS", "100"),
            ("CONFLUENCE_RETRY_MAX_MS", "2000"),
            // A killed member is noticed in seconds, not in the default 45.
            (
                "KAFKA_CLIENT_PROPERTIES",
                "session.timeout.ms=6000,heartbeat.interval.ms=500",
            ),
        ];
        settings.extend_from_slice(extra);
        Service::start(TEST_PROCESSOR, &self.env(&settings))
    }

    /// Stops PostgreSQL at once, as an outage would.
    pub async fn stop_database(&self) {
        self.with_pg(PgCluster::stop_server).await;
    }

    pub async fn start_database(&self) {
        self.with_pg(PgCluster::start_server).await;
    }

    async fn with_pg(&self, action: fn(&mut PgCluster)) {
        tokio::task::block_in_place(|| {
            let mut pg = self.pg.lock().expect("cluster lock");
            action(&mut pg);
        });
    }

    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.database_url)
            .await
            .expect("connect to the world's database")
    }

    /// Every webhook event the test handler has handled: event id -> clientKey.
    pub async fn handled(&self, pool: &PgPool) -> HashMap<String, String> {
        sqlx::query(
            "SELECT event_id, client_key FROM handled_events WHERE handler = $1 \
             AND event_type NOT IN ('installed', 'uninstalled', 'enabled', 'disabled')",
        )
        .bind(HANDLER_NAME)
        .fetch_all(pool)
        .await
        .expect("handled events")
        .into_iter()
        .map(|row| (row.get("event_id"), row.get("client_key")))
        .collect()
    }

    /// Each tenant's list of handled event ids, in the order the handler appended them.
    pub async fn tenant_lists(&self, pool: &PgPool) -> HashMap<String, Vec<String>> {
        sqlx::query("SELECT client_key, value::text AS ids FROM tenant_state WHERE key = $1")
            .bind(HANDLED_KEY)
            .fetch_all(pool)
            .await
            .expect("tenant state")
            .into_iter()
            .map(|row| {
                let ids: String = row.get("ids");
                (
                    row.get("client_key"),
                    serde_json::from_str(&ids).expect("a list of event ids"),
                )
            })
            .collect()
    }

    /// Every record on `topic` now.
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

    /// The next `count` produce requests fail with a retriable error.
    pub async fn fail_produce_requests(&self, count: usize) {
        let kafka = self.kafka.clone();
        let errors = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; count];
        tokio::task::spawn_blocking(move || kafka.request_errors(RDKafkaApiKey::Produce, &errors))
            .await
            .expect("request errors");
    }
}

impl World {
    /// `count` tenants living on the simulated Confluence, installed through `ingest`, each
    /// with a page of its own there.
    pub async fn install_tenants(
        &self,
        ingest: &Ingest,
        prefix: &str,
        count: usize,
    ) -> Vec<SiteTenant> {
        let site = self.confluence.base_url();
        let tenants: Vec<SiteTenant> = (0..count)
            .map(|i| SiteTenant::new(&format!("{prefix}{i}"), &site))
            .collect();
        let answers = futures::future::join_all(tenants.iter().map(|t| ingest.install(t))).await;
        for (tenant, answer) in tenants.iter().zip(answers) {
            assert_eq!(
                answer.status, 204,
                "install {}: {}",
                tenant.client_key, answer.body
            );
            self.confluence.register(&tenant.client_key, &tenant.secret);
            self.confluence
                .add_page(&tenant.client_key, &tenant.page_id, "9001", "Pipeline");
        }
        tenants
    }

    /// Waits until every id in `expected` is handled or `patience` passes; the handled
    /// events then.
    pub async fn wait_handled(
        &self,
        pool: &PgPool,
        expected: &[String],
        patience: Duration,
    ) -> HashMap<String, String> {
        let until = std::time::Instant::now() + patience;
        loop {
            let handled = self.handled(pool).await;
            if expected.iter().all(|id| handled.contains_key(id))
                || std::time::Instant::now() > until
            {
                return handled;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
