//! `tributary`: operator and developer commands.

mod baseline;
mod demo_app;
mod demo_site;
mod dev;
mod dev_key;
mod dlq;
mod embedded_broker;
mod loadgen;
mod probe;
mod tenants;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tributary_common::Config;
use tributary_common::store;

#[derive(Parser)]
#[command(name = "tributary", version, about = "Operate a Tributary deployment")]
struct Cli {
    /// A TOML file with settings; TRIBUTARY_* environment variables override it.
    #[arg(long, global = true, env = "TRIBUTARY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the ingest and a processor in one process on an embedded broker and a SQLite
    /// file, for development; --demo adds a simulated Confluence.
    Dev(dev::DevArgs),
    /// Apply the database migrations to TRIBUTARY_DATABASE_URL (safe to run again).
    Migrate,
    /// Inspect and maintain tenants.
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Validate the configuration and print the effective settings (secrets redacted).
    Config,
    /// Forge Remote: `forge manifest` prints the manifest.yml fragment for this app.
    Forge {
        #[command(subcommand)]
        command: ForgeCommand,
    },
    /// Inspect and replay dead-lettered events.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Install tenants and send signed webhooks at the ingest; report throughput and latency.
    Loadgen(loadgen::LoadgenArgs),
    /// A bare HTTP server answering 204 to every webhook: the machine's ceiling for loadgen.
    BaselineServer {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
    },
    /// Run the in-memory broker of `tributary dev` on its own (benchmarks, experiments).
    EmbeddedBroker {
        /// Topics to create, each with its dead-letter topic.
        #[arg(long, value_delimiter = ',', default_value = "tributary.events")]
        topics: Vec<String>,
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        #[arg(long, default_value = ".dlq")]
        dlq_suffix: String,
    },
    /// A simulated Confluence that installs demo tenants at a running ingest and sends them a
    /// steady stream of webhooks (the compose stack's demo profile).
    DemoSite(demo_site::DemoSiteArgs),
    /// A processor running the demo handler, calling the simulated Confluence back.
    DemoApp(demo_app::DemoAppArgs),
    /// Make a development secret key in FILE once (the first run of `docker compose up`);
    /// nothing to do when TRIBUTARY_SECRET_KEY is set.
    DevKey { file: PathBuf },
    /// Exit 0 when URL answers 2xx (container health checks).
    Probe {
        url: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3)]
        timeout_seconds: u64,
    },
}

#[derive(Subcommand)]
enum ForgeCommand {
    /// Print the manifest.yml fragment (trigger, endpoint with the app system token,
    /// remote, scopes) that makes Forge deliver events to this ingest.
    Manifest,
}

#[derive(Subcommand)]
enum TenantsCommand {
    /// List tenants with their status, any Confluence quota pause holding their calls back
    /// and how many of their events are parked until a retry is due.
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-encrypt shared secrets made with a previous TRIBUTARY_SECRET_KEY.
    Reencrypt,
}

fn main() -> std::process::ExitCode {
    tributary_common::binary::run_main(run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // These commands talk to running services and need no configuration of their own.
    match cli.command {
        Command::Probe {
            url,
            timeout_seconds,
        } => {
            return probe::probe(&url, std::time::Duration::from_secs(timeout_seconds)).await;
        }
        Command::Loadgen(args) => return loadgen::run(args).await,
        Command::BaselineServer { listen } => return baseline::run(listen).await,
        Command::EmbeddedBroker {
            topics,
            partitions,
            dlq_suffix,
        } => return embedded_broker::run(&topics, partitions, &dlq_suffix).await,
        Command::Dev(args) => return dev::run(args, cli.config.as_deref()).await,
        Command::DemoSite(args) => return demo_site::run(args).await,
        Command::DevKey { file } => {
            return dev_key::run(
                &file,
                &std::env::var("TRIBUTARY_SECRET_KEY").unwrap_or_default(),
            );
        }
        _ => {}
    }
    let config = Config::load(cli.config.as_deref())?;
    tributary_common::telemetry::init_tracing(&config.log_format);
    match cli.command {
        Command::Migrate => {
            let db = store::prepare(&config).await?;
            println!(
                "migrations applied ({} known)",
                store::migrator(db.backend()).iter().count()
            );
        }
        Command::Config => println!("{config:#?}"),
        Command::Forge {
            command: ForgeCommand::Manifest,
        } => print!("{}", tributary_ingest::forge::manifest::manifest(&config)),
        Command::DemoApp(args) => demo_app::run(args, config).await?,
        Command::Dlq { command } => dlq::run(&config, command).await?,
        Command::Probe { .. }
        | Command::Loadgen(_)
        | Command::BaselineServer { .. }
        | Command::EmbeddedBroker { .. }
        | Command::Dev(_)
        | Command::DemoSite(_)
        | Command::DevKey { .. } => {}
        Command::Tenants { command } => match command {
            TenantsCommand::List { json } => tenants::list(&config, json).await?,
            TenantsCommand::Reencrypt => tenants::reencrypt(&config).await?,
        },
    }
    Ok(())
}
