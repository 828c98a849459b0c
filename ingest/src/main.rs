use std::path::PathBuf;

use clap::Parser;
use tributary_common::Config;

#[derive(Parser)]
#[command(name = "tributary-ingest", version, about = "Tributary ingest service")]
struct Cli {
    /// A TOML file with settings; TRIBUTARY_* environment variables override it.
    #[arg(long, env = "TRIBUTARY_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    tributary_common::shutdown::run_main(run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    tributary_common::telemetry::init_tracing(&config.log_format);
    tracing::info!("configuration loaded");
    Ok(())
}
