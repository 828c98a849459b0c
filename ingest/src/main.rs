//! The `tributary-ingest` binary: configuration and signals around [`tributary_ingest::run`].
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tributary_common::{Config, binary, shutdown, telemetry};

// glibc's allocator was the largest single cost of a webhook on one core (about a sixth,
// much of it merging freed chunks); with mimalloc the same binary ran fewer instructions and
// served more webhooks per second (BENCHMARKS.md, "Allocator" under "Ingest per core").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tributary-ingest", version, about = "Tributary ingest service")]
struct Cli {
    /// A TOML file with settings; TRIBUTARY_* environment variables override it.
    #[arg(long, env = "TRIBUTARY_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    binary::run_configured(
        cli.config.as_deref(),
        |config| config.ingest_worker_threads,
        run,
    )
}

async fn run(config: Config) -> anyhow::Result<()> {
    telemetry::init_tracing(&config.log_format);
    let listener = TcpListener::bind(&config.ingest_listen)
        .await
        .with_context(|| format!("cannot listen on ingest_listen {}", config.ingest_listen))?;
    let metrics_listener = telemetry::bind_metrics(&config.metrics_listen).await?;
    tributary_ingest::run(config, listener, metrics_listener, shutdown::on_signals()).await?;
    tracing::info!("stopped");
    Ok(())
}
