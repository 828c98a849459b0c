//! The end-to-end harness: a [`World`] to run the services in (a broker, a PostgreSQL
//! database, an install-key server and a simulated Confluence), the ingest
//! running in it ([`Ingest`], in this process or as a child), and the requests Confluence
//! sends it ([`Tenant`], [`Raw`]).
//!
//! The broker is librdkafka's in-memory mock cluster, or the real broker `KAFKA_BROKERS`
//! names: then the world's topics and consumer groups get names of their own (see
//! [`TestBroker`]), which the settings it hands the services carry, and a test that injects
//! broker faults skips itself ([`crate::kafka::skip_without_fault_injection`]).
//!
//! A test crate describes its world once (topics, settings, how the ingest runs):
//!
//! ```text
//! let world = World::builder()
//!     .topic("tributary.events", 3)
//!     .setting("TRIBUTARY_INGEST_PUBLISH_TIMEOUT_MS", "1500")
//!     .ingest_in_process(tributary_ingest::run)
//!     .start()
//!     .await;
//! let ingest = world.ingest(&[]).await;
//! let tenant = Tenant::new("acme");
//! assert_eq!(ingest.install(&tenant).await.status(), 204);
//! ```

mod child;
mod ingest;
mod request;
mod tenant;

pub use crate::kafka::skip_without_fault_injection;
pub use child::{Service, binary, run};
pub use ingest::{Answer, Delivery, Ingest};
pub use request::Raw;
pub use tenant::{Tenant, install_token, page_event};

use std::future::Future;
use std::pin::Pin;
use std::process::Output;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::message::OwnedMessage;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tributary_common::Config;
use tributary_common::shutdown::Shutdown;

use crate::confluence::{Simulator, SimulatorSettings};
use crate::kafka::{TestBroker, read_topic};
use crate::pg_cluster::PgCluster;
use crate::{INSTALL_PUB_1, KeyServer, TestDatabase, test_secret_key_base64};

/// The app the world's services run as.
pub const APP_KEY: &str = "com.example.tributary";
pub const APP_BASE_URL: &str = "https://app.example.com";
/// The `kid` the world's key server publishes [`crate::INSTALL_PUB_1`] under.
pub const KID: &str = "install-key-1";
/// The setting that carries extra librdkafka properties.
const CLIENT_PROPERTIES: &str = "TRIBUTARY_KAFKA_CLIENT_PROPERTIES";

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type IngestTask = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
/// An ingest's entry point: `run(config, listener, metrics_listener, shutdown)`.
type RunIngest =
    Arc<dyn Fn(Config, TcpListener, TcpListener, Shutdown) -> IngestTask + Send + Sync>;

/// What a [`World`] is made of.
pub struct WorldBuilder {
    topics: Vec<(String, i32)>,
    settings: Vec<(String, String)>,
    own_cluster: bool,
    run_ingest: Option<RunIngest>,
}

impl WorldBuilder {
    /// A topic to create on the broker (the mock has no automatic topic creation).
    pub fn topic(mut self, name: &str, partitions: i32) -> WorldBuilder {
        self.topics.push((name.to_string(), partitions));
        self
    }

    /// A setting (`TRIBUTARY_*`) every service of the world runs with.
    pub fn setting(mut self, name: &str, value: &str) -> WorldBuilder {
        self.settings.push((name.to_string(), value.to_string()));
        self
    }

    /// A PostgreSQL cluster of the world's own (`initdb` + `pg_ctl`), which a test may stop
    /// and start, migrated by `tributary migrate`; otherwise a database of its own on the
    /// shared server (`DATABASE_URL`).
    pub fn own_cluster(mut self) -> WorldBuilder {
        self.own_cluster = true;
        self
    }

    /// Runs the ingest in this process through `run` (`tributary_ingest::run`); otherwise
    /// the `tributary-ingest` binary runs as a child process.
    pub fn ingest_in_process<F, Fut, E>(mut self, run: F) -> WorldBuilder
    where
        F: Fn(Config, TcpListener, TcpListener, Shutdown) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        self.run_ingest = Some(Arc::new(move |config, listener, metrics, shutdown| {
            let task = run(config, listener, metrics, shutdown);
            Box::pin(async move { task.await.map_err(BoxError::from) })
        }));
        self
    }

    pub async fn start(self) -> World {
        let kafka = Arc::new(
            tokio::task::spawn_blocking(TestBroker::start)
                .await
                .expect("start the broker"),
        );
        for (topic, partitions) in &self.topics {
            kafka.create_topic(topic, *partitions);
        }
        let database = if self.own_cluster {
            let cluster = tokio::task::spawn_blocking(PgCluster::start)
                .await
                .expect("start PostgreSQL");
            WorldDatabase::Cluster {
                url: cluster.url("tributary"),
                cluster: Mutex::new(cluster),
            }
        } else {
            let db = TestDatabase::create().await;
            WorldDatabase::Shared {
                url: db.url.clone(),
                db: Mutex::new(Some(db)),
            }
        };
        let stop = Shutdown::new();
        let world = World {
            kafka,
            keys: KeyServer::start(&[(KID, INSTALL_PUB_1)]).await,
            confluence: Simulator::start(SimulatorSettings::new(APP_KEY), stop.clone())
                .await
                .expect("start the simulated Confluence"),
            database,
            settings: self.settings,
            run_ingest: self.run_ingest,
            stop,
        };
        if let WorldDatabase::Cluster { .. } = world.database {
            let migrated = world.cli(&["migrate"]);
            assert!(
                migrated.status.success(),
                "migrate: {}",
                String::from_utf8_lossy(&migrated.stderr)
            );
        }
        world
    }
}

enum WorldDatabase {
    Shared {
        url: String,
        /// Gone once the test took the database away.
        db: Mutex<Option<TestDatabase>>,
    },
    Cluster {
        url: String,
        cluster: Mutex<PgCluster>,
    },
}

/// Everything a test runs the services among, for one test. It stops what it started when
/// dropped.
pub struct World {
    pub kafka: Arc<TestBroker>,
    pub keys: KeyServer,
    pub confluence: Simulator,
    database: WorldDatabase,
    settings: Vec<(String, String)>,
    run_ingest: Option<RunIngest>,
    stop: Shutdown,
}

impl World {
    pub fn builder() -> WorldBuilder {
        WorldBuilder {
            topics: Vec::new(),
            settings: Vec::new(),
            own_cluster: false,
            run_ingest: None,
        }
    }

    pub fn database_url(&self) -> &str {
        match &self.database {
            WorldDatabase::Shared { url, .. } | WorldDatabase::Cluster { url, .. } => url,
        }
    }

    /// The settings of a service in this world: the world's, then `extra` (full
    /// `TRIBUTARY_*` names) over them.
    pub fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("TRIBUTARY_DATABASE_URL", self.database_url().to_string()),
            (
                "TRIBUTARY_KAFKA_BROKERS",
                self.kafka.bootstrap_servers().to_string(),
            ),
            ("TRIBUTARY_SECRET_KEY", test_secret_key_base64()),
            ("TRIBUTARY_INSTALL_KEYS_URL", self.keys.url()),
            ("TRIBUTARY_APP_KEY", APP_KEY.to_string()),
            ("TRIBUTARY_APP_BASE_URL", APP_BASE_URL.to_string()),
            ("TRIBUTARY_SHUTDOWN_TIMEOUT_SECONDS", "10".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if self.kafka.is_real() {
            // The defaults name topics and a group too: they get this world's names.
            let defaults = Config::defaults().expect("the default settings load");
            env.extend([
                (
                    "TRIBUTARY_EVENTS_TOPIC".to_string(),
                    self.kafka.topic(&defaults.events_topic),
                ),
                (
                    "TRIBUTARY_PROCESSOR_TOPICS".to_string(),
                    self.on_broker(
                        "TRIBUTARY_PROCESSOR_TOPICS",
                        &defaults.processor_topics.join(","),
                    ),
                ),
                (
                    "TRIBUTARY_PROCESSOR_GROUP_ID".to_string(),
                    self.kafka.group(&defaults.processor_group_id),
                ),
            ]);
        }
        let overrides = self
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra.iter().copied());
        for (key, value) in overrides {
            env.retain(|(k, _)| k != key);
            env.push((key.to_string(), self.on_broker(key, value)));
        }
        env
    }

    /// Setting `key` with the topic and group names in `value` as this world's broker knows
    /// them.
    fn on_broker(&self, key: &str, value: &str) -> String {
        let topics = |list: &str, map: &dyn Fn(&str) -> String| {
            list.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(map)
                .collect::<Vec<_>>()
                .join(",")
        };
        match key {
            "TRIBUTARY_EVENTS_TOPIC" | "TRIBUTARY_PROCESSOR_TOPICS" => {
                topics(value, &|topic| self.kafka.topic(topic))
            }
            "TRIBUTARY_TOPIC_ROUTES" => topics(value, &|route| match route.split_once('=') {
                Some((pattern, topic)) => format!("{pattern}={}", self.kafka.topic(topic.trim())),
                None => route.to_string(),
            }),
            "TRIBUTARY_PROCESSOR_GROUP_ID" => self.kafka.group(value),
            _ => value.to_string(),
        }
    }

    /// Starts an ingest with `extra` settings, in this process or as a child (see
    /// [`WorldBuilder::ingest_in_process`]), and waits until it serves.
    pub async fn ingest(&self, extra: &[(&str, &str)]) -> Ingest {
        let properties = self.one_produce_in_flight_on_the_mock(extra);
        let mut extra = extra.to_vec();
        if let Some(properties) = &properties {
            extra.push((CLIENT_PROPERTIES, properties.as_str()));
        }
        match &self.run_ingest {
            Some(run) => Ingest::in_process(self.env(&extra), run.as_ref()).await,
            None => Ingest::child(self, &extra).await,
        }
    }

    /// On the mock cluster, the client properties that `extra` and the world's settings
    /// give, behind `max.in.flight.requests.per.connection=1`. The mock checks an
    /// idempotent producer's sequence numbers only when it is transactional: where a real
    /// broker refuses a produce request whose predecessor failed (an injected
    /// NOT_ENOUGH_REPLICAS, say) as out of sequence, the mock appends it, and librdkafka
    /// takes that success as proof the failed request's records were written too and
    /// reports them delivered (offset -1001) although they never reached the log. With one
    /// request in flight no later one can pass a failed one. None on a real broker.
    fn one_produce_in_flight_on_the_mock(&self, extra: &[(&str, &str)]) -> Option<String> {
        const ONE_IN_FLIGHT: &str = "max.in.flight.requests.per.connection=1";
        if self.kafka.is_real() {
            return None;
        }
        // As in `env`: the last of `extra` wins over the world's settings.
        let theirs = extra
            .iter()
            .rev()
            .find(|(key, _)| *key == CLIENT_PROPERTIES)
            .map(|(_, value)| *value)
            .or_else(|| {
                self.settings
                    .iter()
                    .rev()
                    .find(|(key, _)| key == CLIENT_PROPERTIES)
                    .map(|(_, value)| value.as_str())
            })
            .map(str::trim)
            .filter(|theirs| !theirs.is_empty());
        Some(match theirs {
            Some(theirs) => format!("{ONE_IN_FLIGHT},{theirs}"),
            None => ONE_IN_FLIGHT.to_string(),
        })
    }

    /// Runs the `tributary` command against this world.
    pub fn cli(&self, args: &[&str]) -> Output {
        let env = self.env(&[]);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run("tributary", args, &pairs)
    }

    /// Starts workspace binary `name` as a service of this world, with `extra` settings.
    pub fn service(&self, name: &str, extra: &[(&str, &str)]) -> Service {
        Service::start(name, &self.env(extra))
    }

    /// A pool on the world's database.
    pub async fn pool(&self) -> PgPool {
        if let WorldDatabase::Shared { db, .. } = &self.database
            && let Some(db) = lock(db).as_ref()
        {
            return db.pool.clone();
        }
        PgPoolOptions::new()
            .max_connections(2)
            .connect(self.database_url())
            .await
            .expect("connect to the world's database")
    }

    /// Takes the database away at once, as an outage would: a cluster of the world's own
    /// is stopped ([`World::start_database`] brings it back); a database on the shared
    /// server is dropped for good, which ends every connection to it.
    pub async fn stop_database(&self) {
        match &self.database {
            WorldDatabase::Shared { db, .. } => {
                let taken = lock(db).take();
                drop(taken);
            }
            WorldDatabase::Cluster { cluster, .. } => {
                tokio::task::block_in_place(|| lock(cluster).stop_server());
            }
        }
    }

    pub async fn start_database(&self) {
        match &self.database {
            WorldDatabase::Shared { .. } => {
                panic!("a database dropped from the shared server does not come back")
            }
            WorldDatabase::Cluster { cluster, .. } => {
                tokio::task::block_in_place(|| lock(cluster).start_server());
            }
        }
    }

    /// Every record on `topic` now, read from the beginning.
    pub async fn records(&self, topic: &str) -> Vec<OwnedMessage> {
        read_topic(
            self.kafka.bootstrap_servers(),
            &self.kafka.topic(topic),
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

    /// Every answer of the mock broker takes `delay` longer (`Duration::ZERO` undoes it).
    pub async fn broker_round_trip(&self, delay: Duration) {
        let kafka = self.kafka.clone();
        tokio::task::spawn_blocking(move || kafka.round_trip_time(delay))
            .await
            .expect("broker round trip");
    }

    /// The next `count` produce requests fail with a retriable error.
    pub async fn fail_produce_requests(&self, count: usize) {
        let kafka = self.kafka.clone();
        let errors = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; count];
        tokio::task::spawn_blocking(move || kafka.request_errors(RDKafkaApiKey::Produce, &errors))
            .await
            .expect("request errors");
    }

    /// `count` tenants living on the simulated Confluence, installed through `ingest`, each
    /// with a page of its own there.
    pub async fn install_tenants(
        &self,
        ingest: &Ingest,
        prefix: &str,
        count: usize,
    ) -> Vec<Tenant> {
        let site = self.confluence.base_url();
        let tenants: Vec<Tenant> = (0..count)
            .map(|i| Tenant::on_site(&format!("{prefix}{i}"), &site))
            .collect();
        let answers = futures::future::join_all(tenants.iter().map(|t| ingest.install(t))).await;
        for (tenant, answer) in tenants.iter().zip(answers) {
            assert_eq!(
                answer.status(),
                204,
                "install {}: {}",
                tenant.client_key,
                answer.text()
            );
            self.confluence.register(&tenant.client_key, &tenant.secret);
            self.confluence
                .add_page(&tenant.client_key, &tenant.page_id, "9001", "Pipeline");
        }
        tenants
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
