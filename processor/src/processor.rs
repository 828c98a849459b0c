//! The processor an app builds: configuration, handlers, then `run`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tributary_common::Config;
use tributary_common::config::ConfigError;
use tributary_common::shutdown::Shutdown;
use tributary_common::store::{
    self, Database, ForgeStore, HandlerStore, ParkedStore, PauseStore, TenantStore,
};
use tributary_common::telemetry;

use crate::backoff::BackoffSchedule;
use crate::builtin;
use crate::confluence::{ConfluenceClients, ConfluenceError};
use crate::dlq::DeadLetterWriter;
use crate::handler::{EventFilter, Handler, Subscription};
use crate::runtime::{self, Assignments, FailureGuard, Shared};
use crate::tenants::TenantCache;

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("confluence client: {0}")]
    Confluence(#[from] ConfluenceError),
    #[error("metrics listener: {0}")]
    Metrics(#[from] std::io::Error),
    #[error("invalid setting `processor_handlers`: unknown handler `{0}` (known: log)")]
    UnknownHandler(String),
    #[error("two handlers are named `{0}`; handler names must be unique")]
    DuplicateHandler(String),
    #[error(
        "stopped by the failure guard: {failures} of the last {window} events failed; \
         fix the cause and restart (nothing was dead-lettered past the limit)"
    )]
    GuardTripped { failures: usize, window: usize },
    #[error("a worker task failed: {0}")]
    Worker(String),
}

/// Registers handlers; see [`Processor::builder`].
pub struct ProcessorBuilder {
    config: Config,
    subscriptions: Vec<Subscription>,
    db: Option<Database>,
    confluence: Option<ConfluenceClients>,
}

impl ProcessorBuilder {
    /// Runs `handler` for events whose name matches `pattern` (`page_created`, `page_*`,
    /// `*`). The handler is named after the pattern (`page_*#2` for a second one).
    pub fn on(self, pattern: &str, handler: impl Handler) -> Self {
        let name = self.free_name(pattern);
        self.subscribe(name, EventFilter::Pattern(pattern.to_string()), handler)
    }

    /// Like [`ProcessorBuilder::on`] with an explicit name. The name keys the records of
    /// handled events, so it must stay the same from one deployment to the next.
    pub fn on_named(self, name: &str, pattern: &str, handler: impl Handler) -> Self {
        self.subscribe(
            name.to_string(),
            EventFilter::Pattern(pattern.to_string()),
            handler,
        )
    }

    /// Runs `handler` for the lifecycle events (`installed`, `enabled`, `disabled`,
    /// `uninstalled`), after the built-in tenant-state handler has applied them.
    pub fn on_lifecycle(self, handler: impl Handler) -> Self {
        let name = self.free_name("lifecycle");
        self.subscribe(name, EventFilter::Lifecycle, handler)
    }

    /// Uses this database (a [`Database`], or a PostgreSQL or SQLite pool) instead of
    /// connecting to `database_url`, and skips migrations.
    pub fn database(mut self, db: impl Into<Database>) -> Self {
        self.db = Some(db.into());
        self
    }

    pub fn confluence(mut self, clients: ConfluenceClients) -> Self {
        self.confluence = Some(clients);
        self
    }

    fn subscribe(mut self, name: String, filter: EventFilter, handler: impl Handler) -> Self {
        self.subscriptions.push(Subscription {
            name,
            filter,
            handler: Arc::new(handler),
        });
        self
    }

    fn free_name(&self, base: &str) -> String {
        let taken = |name: &str| self.subscriptions.iter().any(|s| s.name == name);
        if !taken(base) {
            return base.to_string();
        }
        (2..)
            .map(|n| format!("{base}#{n}"))
            .find(|name| !taken(name))
            .unwrap_or_else(|| base.to_string())
    }

    /// Connects to the database (applying migrations) unless one was given, and checks
    /// the configuration.
    pub async fn build(self) -> Result<Processor, ProcessorError> {
        let config = self.config;
        let keyring = config.secret_keyring()?.clone();
        let db = match self.db {
            Some(db) => db,
            None => {
                let db = store::connect(&config).await?;
                store::migrate(&db).await?;
                db
            }
        };
        let tenants = TenantStore::new(db.clone(), keyring.clone());
        let forge = ForgeStore::new(db.clone(), keyring);
        let confluence = match self.confluence {
            Some(clients) => clients,
            None => ConfluenceClients::from_config(&config)?,
        };
        confluence.share_pauses_through(PauseStore::new(db.clone()));
        let mut subscriptions = Vec::new();
        let (filter, handler) = builtin::tenant_state(tenants.clone());
        subscriptions.push(Subscription {
            name: builtin::TENANT_STATE.into(),
            filter,
            handler: Arc::new(handler),
        });
        for name in &config.processor_handlers {
            match name.as_str() {
                "log" => {
                    let (filter, handler) = builtin::log();
                    subscriptions.push(Subscription {
                        name: builtin::LOG.into(),
                        filter,
                        handler: Arc::new(handler),
                    });
                }
                other => return Err(ProcessorError::UnknownHandler(other.to_string())),
            }
        }
        subscriptions.extend(self.subscriptions);
        for (i, s) in subscriptions.iter().enumerate() {
            if subscriptions[..i]
                .iter()
                .any(|earlier| earlier.name == s.name)
            {
                return Err(ProcessorError::DuplicateHandler(s.name.clone()));
            }
        }
        let window = usize::try_from(config.processor_guard_window).unwrap_or(usize::MAX);
        let names = subscriptions
            .iter()
            .map(|s| Arc::from(s.name.as_str()))
            .collect();
        let parked = ParkedStore::new(db.clone());
        let shared = Shared {
            handled: HandlerStore::new(db.clone()),
            db,
            tenants: TenantCache::new(
                tenants,
                forge,
                config.processor_tenant_cache_size,
                Duration::from_secs(config.processor_tenant_cache_ttl_seconds),
            ),
            confluence,
            subscriptions,
            names,
            durations: std::sync::OnceLock::new(),
            dead_letters: DeadLetterWriter::new(&config)?,
            guard: Mutex::new(FailureGuard::new(
                window,
                config.processor_guard_max_failure_ratio,
            )),
            retry: BackoffSchedule::from_config(&config),
            park_after: Duration::from_millis(config.processor_park_after_ms),
            parked,
            stopping: Shutdown::new(),
        };
        Ok(Processor {
            config,
            shared: Arc::new(shared),
            assignments: Arc::default(),
        })
    }

    /// Builds and runs until `shutdown` fires.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), ProcessorError> {
        self.build().await?.run(shutdown).await
    }
}

/// A consumer-group member running handlers. Build one with [`Processor::builder`].
pub struct Processor {
    config: Config,
    shared: Arc<Shared>,
    assignments: Arc<Mutex<Assignments>>,
}

impl Processor {
    /// A processor with the built-in handlers: tenant state from lifecycle events, plus
    /// those named in `processor_handlers`.
    pub fn builder(config: Config) -> ProcessorBuilder {
        ProcessorBuilder {
            config,
            subscriptions: Vec::new(),
            db: None,
            confluence: None,
        }
    }

    /// The names of the handlers that will run, in the order they run for an event.
    pub fn handler_names(&self) -> Vec<&str> {
        self.shared
            .subscriptions
            .iter()
            .map(|s| s.name.as_str())
            .collect()
    }

    /// A live view of this processor's share of the group.
    pub fn status(&self) -> ProcessorStatus {
        ProcessorStatus {
            assignments: self.assignments.clone(),
        }
    }

    /// Serves metrics on `metrics_listen`, consumes until `shutdown` fires (or the failure
    /// guard trips), then finishes or abandons in-flight events within
    /// `shutdown_timeout_seconds`, commits what finished and leaves the group.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), ProcessorError> {
        telemetry::metrics_handle();
        crate::observe::describe();
        let listener = telemetry::bind_metrics(&self.config.metrics_listen).await?;
        tracing::info!(address = %listener.local_addr()?, "serving metrics");
        let metrics_stop = Shutdown::new();
        let metrics = tokio::spawn(telemetry::serve_metrics(listener, metrics_stop.clone()));
        let result = runtime::consume(
            self.shared.clone(),
            &self.config,
            self.assignments.clone(),
            shutdown,
        )
        .await;
        metrics_stop.cancel();
        let _ = metrics.await;
        result
    }
}

/// Which partitions a running processor holds (for health checks and tests).
#[derive(Clone)]
pub struct ProcessorStatus {
    assignments: Arc<Mutex<Assignments>>,
}

impl ProcessorStatus {
    pub fn assigned_partitions(&self) -> Vec<(String, i32)> {
        self.assignments
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .assigned()
    }
}
