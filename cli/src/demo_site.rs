//! `tributary demo-site`: the simulated Confluence of `tributary dev --demo` as a process of
//! its own, for the demo profile of the compose stack. It installs a few demo tenants
//! through real signed installs at a running ingest (which must trust its install-key server
//! and allow its host) and sends them a steady stream of webhooks until stopped.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use tributary_common::shutdown;

use crate::dev::demo::{Demo, DemoOptions};

#[derive(Args, Debug)]
pub struct DemoSiteArgs {
    /// The ingest to install at and send webhooks to.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    ingest: String,
    /// The app key the ingest runs with.
    #[arg(
        long,
        env = "TRIBUTARY_APP_KEY",
        default_value = "com.example.tributary"
    )]
    app_key: String,
    /// The ingest's app base URL: the audience of signed installs.
    #[arg(
        long,
        env = "TRIBUTARY_APP_BASE_URL",
        default_value = "http://localhost:8080"
    )]
    app_base_url: String,
    /// Where the simulated Confluence serves its REST API.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// The address processors reach the simulated site at (default: http://<listen>).
    #[arg(long)]
    public_url: Option<String>,
    /// Where the install-key server serves the demo's public key.
    #[arg(long, default_value = "127.0.0.1:7999")]
    key_server_listen: SocketAddr,
    /// Demo tenants to install.
    #[arg(long, default_value_t = 3)]
    tenants: usize,
    /// Webhooks per second once the opening script is done.
    #[arg(long, default_value_t = 4.0)]
    rate: f64,
}

pub async fn run(args: DemoSiteArgs) -> anyhow::Result<()> {
    tributary_common::telemetry::init_tracing("text");
    anyhow::ensure!(
        args.rate > 0.0 && args.rate <= 1000.0,
        "--rate must be between 0 and 1000 webhooks per second"
    );
    let shutdown = shutdown::on_signals();
    let options = DemoOptions {
        tenants: args.tenants.max(1),
        site_listen: args.listen,
        site_public_url: Some(
            args.public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", args.listen)),
        ),
        key_server_listen: args.key_server_listen,
        key_server_public_url: None,
        steady_pace: Duration::from_secs_f64(1.0 / args.rate),
        // The compose stack runs without a Forge app: Connect sites only.
        forge_app_id: None,
    };
    let demo = Demo::start(&args.app_key, options, shutdown.clone()).await?;
    println!(
        "tributary demo-site: a simulated Confluence playing against {}",
        args.ingest
    );
    println!(
        "  site        {} ({} demo tenants)",
        demo.site_url(),
        args.tenants.max(1)
    );
    println!(
        "  key server  http://{} (the ingest's TRIBUTARY_INSTALL_KEYS_URL must name it)",
        args.key_server_listen
    );
    println!(
        "  webhooks    {} per second after the opening script",
        args.rate
    );
    demo.run(
        args.ingest.trim_end_matches('/').to_string(),
        args.app_base_url.trim_end_matches('/').to_string(),
        args.app_key,
        shutdown,
    )
    .await?;
    tracing::info!("stopped");
    Ok(())
}
