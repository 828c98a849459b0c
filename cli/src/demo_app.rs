//! `tributary demo-app`: a processor running the demo handler of `tributary dev --demo`
//! (reads created and updated pages back, comments on and labels them), for the demo profile
//! of the compose stack. It touches only tenants on the simulated site's host, so a real
//! site installed beside the demo is never written to.

use anyhow::Context;
use clap::Args;
use tributary_common::Config;
use tributary_processor::Processor;

use crate::dev::handler;

#[derive(Args, Debug)]
pub struct DemoAppArgs {
    /// The host of the simulated Confluence (`tributary demo-site`); tenants elsewhere are
    /// left alone.
    #[arg(long, default_value = "127.0.0.1")]
    site_host: String,
}

pub async fn run(args: DemoAppArgs, config: Config) -> anyhow::Result<()> {
    let shutdown = tributary_common::shutdown::on_signals();
    let processor = Processor::builder(config)
        .on_named(
            handler::NAME,
            handler::PATTERN,
            // The compose stack's processors use Atlassian's authorization servers, which
            // grant nothing for the simulated site: the demo app acts as the app only.
            handler::demo_handler(handler::DemoHandlerOptions {
                write_back: true,
                act_as_user: false,
                only_host: Some(args.site_host),
            }),
        )
        .build()
        .await
        .context("starting the demo processor")?;
    tracing::info!(handlers = ?processor.handler_names(), "demo processor starting");
    processor
        .run(shutdown)
        .await
        .context("demo processor stopped")?;
    Ok(())
}
