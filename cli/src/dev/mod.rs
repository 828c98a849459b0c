//! `tributary dev`: the ingest and a processor in one process, on an embedded broker and a
//! SQLite file unless `TRIBUTARY_KAFKA_BROKERS` / `TRIBUTARY_DATABASE_URL` name real ones,
//! with a simulated Confluence on `--demo`.

pub(crate) mod demo;
pub(crate) mod handler;
pub(crate) mod settings;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;
use tributary_common::Config;
use tributary_common::shutdown::{self, Shutdown};
use tributary_common::store::{self, Backend, Database};
use tributary_common::telemetry;
use tributary_devkit::EmbeddedKafka;
use tributary_processor::Processor;

use demo::{Demo, DemoOptions};
use settings::DevSettings;

/// Partitions of each topic on the embedded broker.
const EMBEDDED_PARTITIONS: i32 = 3;

#[derive(Args, Debug)]
pub struct DevArgs {
    /// The public base URL Confluence reaches this process at (a tunnel's address); the
    /// descriptor advertises it. Default: http://localhost:<ingest port>.
    #[arg(long)]
    public_url: Option<String>,
    /// Also run a simulated Confluence that installs a demo tenant and sends it webhooks.
    #[arg(long)]
    demo: bool,
}

pub async fn run(args: DevArgs, file: Option<&Path>) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signals();
    let mut settings = DevSettings::new(file)?;
    settings.default_to("database_url", settings::DEFAULT_DATABASE_URL);
    settings.default_to("processor_handlers", "log");
    // Read as configured so far, to place the key file and to extend lists below.
    let draft = settings.load()?;
    telemetry::init_tracing(&draft.log_format);
    let mut notes = Vec::new();
    if !settings.is_explicit("secret_key") && !settings.is_explicit("secret_key_file") {
        let path = settings::key_file_for(&draft.database_url.0);
        let (key, generated) = settings::read_or_generate_key(&path)?;
        settings.set("secret_key", key);
        notes.push(if generated {
            format!(
                "generated a development secret key in {} (set TRIBUTARY_SECRET_KEY to use your own)",
                path.display()
            )
        } else {
            format!("development secret key read from {}", path.display())
        });
    }
    let broker = if settings.is_explicit("kafka_brokers") {
        None
    } else {
        let broker = EmbeddedKafka::start(1)?;
        settings.set("kafka_brokers", broker.bootstrap_servers());
        Some(broker)
    };
    if let Some(url) = &args.public_url {
        settings.set("app_base_url", url.trim_end_matches('/'));
    }
    let demo = if args.demo {
        let forge_app_id = if settings.is_explicit("forge_app_id") {
            draft.forge_app_id.clone()
        } else {
            demo::DEMO_FORGE_APP_ID.to_string()
        };
        let options = DemoOptions {
            forge_app_id: Some(forge_app_id.clone()),
            ..DemoOptions::in_process()
        };
        let demo = Demo::start(&draft.app_key, options, shutdown.clone()).await?;
        settings.set("forge_app_id", forge_app_id);
        if let Some(jwks_url) = demo.jwks_url() {
            settings.set("forge_jwks_url", jwks_url.clone());
            settings.set("forge_staging_jwks_url", jwks_url);
        }
        let mut api_hosts = draft.forge_api_host_allowlist.clone();
        api_hosts.push("127.0.0.1".into());
        settings.set("forge_api_host_allowlist", api_hosts.join(","));
        let mut key_servers = vec![demo.key_server_url().to_string()];
        key_servers.extend(draft.install_keys_url.iter().cloned());
        settings.set("install_keys_url", key_servers.join(","));
        let mut hosts = draft.tenant_host_allowlist.clone();
        hosts.push("127.0.0.1".into());
        settings.set("tenant_host_allowlist", hosts.join(","));
        settings.default_to(
            "oauth_authorization_server_url",
            demo.authorization_server_url(),
        );
        Some(demo)
    } else {
        None
    };

    let ingest_listener = TcpListener::bind(&draft.ingest_listen)
        .await
        .with_context(|| format!("cannot listen on ingest_listen {}", draft.ingest_listen))?;
    let metrics_listener = telemetry::bind_metrics(&draft.metrics_listen).await?;
    let ingest_addr = local(ingest_listener.local_addr()?);
    let metrics_addr = local(metrics_listener.local_addr()?);
    if args.public_url.is_none() && !settings.is_explicit("app_base_url") {
        settings.set(
            "app_base_url",
            format!("http://localhost:{}", ingest_addr.port()),
        );
    }
    let config = settings.load()?;

    if let Some(broker) = &broker {
        create_topics(broker, &config)?;
    }
    let db = store::prepare(&config).await?;

    // Both halves serve the same process-wide metrics: the ingest's listener is the one to
    // scrape, the processor gets a throwaway port so the two do not collide.
    let mut processor_config = config.clone();
    processor_config.metrics_listen = "127.0.0.1:0".into();
    let processor = Processor::builder(processor_config)
        .database(db.clone())
        .on_named(
            handler::NAME,
            handler::PATTERN,
            handler::demo_handler(handler::DemoHandlerOptions {
                write_back: args.demo,
                act_as_user: args.demo,
                only_host: None,
            }),
        )
        .build()
        .await?;

    print_banner(&Banner {
        config: &config,
        handlers: processor.handler_names(),
        db: &db,
        broker: broker.as_ref(),
        ingest: ingest_addr,
        metrics: metrics_addr,
        demo: demo.as_ref(),
        notes: &notes,
    });

    let processor = processor.run(shutdown.clone());
    let ingest = tributary_ingest::run(
        config.clone(),
        ingest_listener,
        metrics_listener,
        shutdown.clone(),
    );
    let demo_run = async {
        match demo {
            Some(demo) => {
                let result = demo
                    .run(
                        format!("http://{ingest_addr}"),
                        config.app_base_url.clone(),
                        config.app_key.clone(),
                        shutdown.clone(),
                    )
                    .await;
                if let Err(error) = &result {
                    tracing::error!(error = format!("{error:#}"), "the demo stopped");
                }
                result
            }
            None => Ok(()),
        }
    };
    // When one half stops (an error, or the failure guard), the other stops with it.
    let (processed, ingested, demoed) = tokio::join!(
        stop_all_after(processor, &shutdown),
        stop_all_after(ingest, &shutdown),
        demo_run,
    );
    db.close().await;
    // The broker goes last: the processor commits its offsets to it on the way out.
    drop(broker);
    processed.context("the processor failed")?;
    ingested.context("the ingest failed")?;
    demoed.context("the demo failed")?;
    tracing::info!("stopped");
    Ok(())
}

async fn stop_all_after<T>(run: impl Future<Output = T>, shutdown: &Shutdown) -> T {
    let result = run.await;
    shutdown.cancel();
    result
}

/// The embedded broker has no automatic topic creation: every topic the ingest may publish
/// to and the processor reads, with their dead-letter topics.
fn create_topics(broker: &EmbeddedKafka, config: &Config) -> anyhow::Result<()> {
    let mut topics: Vec<String> = config
        .topic_router()
        .topics()
        .into_iter()
        .map(str::to_string)
        .collect();
    topics.extend(config.processor_topics.iter().cloned());
    let dead_letters: Vec<String> = topics
        .iter()
        .map(|topic| config.dead_letter_topic(topic))
        .collect();
    topics.extend(dead_letters);
    topics.sort();
    topics.dedup();
    for topic in &topics {
        broker
            .create_topic(topic, EMBEDDED_PARTITIONS)
            .with_context(|| format!("creating topic {topic} on the embedded broker"))?;
    }
    Ok(())
}

/// An address to reach a listener at from this machine.
fn local(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    }
}

struct Banner<'a> {
    config: &'a Config,
    handlers: Vec<&'a str>,
    db: &'a Database,
    broker: Option<&'a EmbeddedKafka>,
    ingest: SocketAddr,
    metrics: SocketAddr,
    demo: Option<&'a Demo>,
    notes: &'a [String],
}

fn print_banner(banner: &Banner<'_>) {
    let config = banner.config;
    println!("tributary dev: the ingest and a processor in one process");
    println!("  handlers    {}", banner.handlers.join(", "));
    match banner.db.backend() {
        Backend::Sqlite => println!("  database    {} (SQLite)", config.database_url.0),
        Backend::Postgres => println!("  database    PostgreSQL (TRIBUTARY_DATABASE_URL)"),
    }
    match banner.broker {
        Some(broker) => println!(
            "  broker      embedded at {}: in memory, it keeps nothing across restarts",
            broker.bootstrap_servers()
        ),
        None => println!("  broker      {}", config.kafka_brokers),
    }
    println!("  ingest      http://{}", banner.ingest);
    println!(
        "  descriptor  {}/atlassian-connect.json",
        config.app_base_url.trim_end_matches('/')
    );
    println!("  metrics     http://{}/metrics", banner.metrics);
    if let Some(demo) = banner.demo {
        println!(
            "  demo        simulated Confluence at {}, installing a demo tenant and a Forge installation",
            demo.site_url()
        );
    }
    for note in banner.notes {
        println!("  note        {note}");
    }
    println!("Ctrl-C stops it.");
}
