use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tributary_common::Config;
use tributary_processor::Processor;

#[derive(Parser)]
#[command(
    name = "tributary-processor",
    version,
    about = "Tributary processor service"
)]
struct Cli {
    /// A TOML file with settings; TRIBUTARY_* environment variables override it.
    #[arg(long, env = "TRIBUTARY_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tributary_processor::service::run_main(cli.config.as_deref(), run)
}

async fn run(config: Config) -> anyhow::Result<()> {
    tributary_common::telemetry::init_tracing(&config.log_format);
    let shutdown = tributary_common::shutdown::on_signals();
    let processor = Processor::builder(config)
        .build()
        .await
        .context("starting the processor")?;
    tracing::info!(handlers = ?processor.handler_names(), "processor starting");
    processor.run(shutdown).await.context("processor stopped")?;
    Ok(())
}
