//! `tributary loadgen`: installs tenants through signed installs, then sends signed webhooks
//! and reports throughput and latency percentiles of the ingest's answers (and, with
//! `--processor-metrics`, end-to-end latency as the processor measured it).

mod prometheus_text;
mod tenants;
mod traffic;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures::stream::{self, StreamExt, TryStreamExt};

use tenants::Installer;
use traffic::{Length, Outcome, Traffic};
use tributary_devkit::{InstallKey, KeyServer};

#[derive(Args, Debug)]
pub struct LoadgenArgs {
    /// Base URL of the ingest (or of the bare baseline server).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// Tenants to install before sending webhooks (0 with --bare).
    #[arg(long, default_value_t = 20)]
    tenants: usize,
    /// Webhooks per second; 0 sends as fast as the target answers.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Seconds of load before measuring, not counted.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Webhook event to send.
    #[arg(long, default_value = "page_created")]
    event: String,
    /// Where the load generator serves its install key; the ingest's
    /// TRIBUTARY_INSTALL_KEYS_URL must point here.
    #[arg(long, default_value = "127.0.0.1:7999")]
    key_server_listen: SocketAddr,
    /// The app key the ingest runs with (TRIBUTARY_APP_KEY).
    #[arg(long, default_value = "com.example.tributary")]
    app_key: String,
    /// The ingest's TRIBUTARY_APP_BASE_URL, the audience of signed installs (default: --target).
    #[arg(long)]
    app_base_url: Option<String>,
    /// The processor's metrics URL, to report end-to-end latency (webhook sent to handler done).
    #[arg(long)]
    processor_metrics: Option<String>,
    /// Target is the bare baseline server: no installs, unsigned requests are fine.
    #[arg(long)]
    bare: bool,
    /// Measure exactly this many requests instead of --duration seconds (and warm up with
    /// this many unless --warmup is 0), so a profiler's counts divide by a known number.
    #[arg(long)]
    requests: Option<u64>,
    /// A shell command run between the warm-up and the measured load (for example
    /// `callgrind_control -z`, so a profile holds only the measured requests).
    #[arg(long)]
    after_warmup: Option<String>,
    /// Install the tenants, write a `wrk` Lua script holding one webhook signed for an hour
    /// to this file, and exit (for `wrk -s FILE TARGET/webhooks/EVENT`).
    #[arg(long)]
    wrk_script: Option<std::path::PathBuf>,
}

pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    let target = args.target.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;

    let tenants = if args.bare {
        vec![tenants::LoadTenant::placeholder()]
    } else {
        let kid = format!("loadgen-{}", uuid::Uuid::new_v4().simple());
        let key = tokio::task::spawn_blocking(move || InstallKey::generate(&kid))
            .await
            .context("generating the install key")??;
        let server = KeyServer::bind(args.key_server_listen, &[(key.kid(), key.public_pem())])
            .await
            .with_context(|| format!("binding the key server on {}", args.key_server_listen))?;
        eprintln!("key server on {} (kid {})", server.url(), key.kid());
        let audience = args.app_base_url.clone().unwrap_or_else(|| target.clone());
        let installer = Installer {
            http: &http,
            target: &target,
            app_key: &args.app_key,
            audience: &audience,
            key: &key,
        };
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let installed: Vec<_> = stream::iter(0..args.tenants.max(1))
            .map(|i| installer.install(i, &run_id))
            .buffer_unordered(8)
            .try_collect()
            .await?;
        eprintln!("installed {} tenants", installed.len());
        installed
    };

    let traffic = Arc::new(Traffic {
        http,
        target: target.clone(),
        event: args.event.clone(),
        tenants,
        concurrency: args.concurrency,
    });
    if let Some(file) = &args.wrk_script {
        let (path, token, body) = traffic
            .request(0, Some(3600))
            .context("signing the webhook")?;
        let script = format!(
            "-- One pre-signed webhook for {path}, valid for an hour.\n\
             wrk.method = \"POST\"\n\
             wrk.body = [==[{body}]==]\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"Authorization\"] = \"JWT {token}\"\n"
        );
        std::fs::write(file, script).with_context(|| format!("writing {}", file.display()))?;
        eprintln!("wrote {} for {target}{path}", file.display());
        return Ok(());
    }
    let length = |seconds: u64| match args.requests {
        Some(n) => Length::Requests(n),
        None => Length::Time(Duration::from_secs(seconds)),
    };
    if args.warmup > 0 {
        traffic.clone().run(args.rate, length(args.warmup)).await?;
    }
    if let Some(command) = &args.after_warmup {
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .status()
            .await
            .with_context(|| format!("running {command:?}"))?;
        anyhow::ensure!(status.success(), "{command:?} exited with {status}");
    }
    let before = match &args.processor_metrics {
        Some(url) => Some(prometheus_text::scrape(url).await?),
        None => None,
    };
    let outcome = traffic
        .clone()
        .run(args.rate, length(args.duration))
        .await?;
    print_outcome(&args, &outcome);
    if let (Some(url), Some(before)) = (&args.processor_metrics, before) {
        // Let the processor finish what is in flight before reading its histogram.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = prometheus_text::scrape(url).await?;
        let delta =
            prometheus_text::histogram_delta(&before, &after, prometheus_text::END_TO_END_METRIC);
        match delta {
            Some(h) => println!(
                "end-to-end (processor): handled={} p50={:.2}ms p99={:.2}ms (bucket upper bounds)",
                h.count,
                h.quantile(0.50) * 1000.0,
                h.quantile(0.99) * 1000.0
            ),
            None => println!(
                "end-to-end (processor): no {} samples",
                prometheus_text::END_TO_END_METRIC
            ),
        }
    }
    Ok(())
}

fn print_outcome(args: &LoadgenArgs, outcome: &Outcome) {
    let secs = outcome.elapsed.as_secs_f64().max(f64::EPSILON);
    let ok: u64 = outcome
        .statuses
        .iter()
        .filter(|(s, _)| s.starts_with('2'))
        .map(|(_, n)| n)
        .sum();
    let ms = |q: f64| outcome.latency.value_at_quantile(q) as f64 / 1000.0;
    let statuses: Vec<String> = outcome
        .statuses
        .iter()
        .map(|(s, n)| format!("{s}={n}"))
        .collect();
    println!(
        "target={} rate={} duration={:.1}s sent={} ok={} throughput={:.0}/s ok_throughput={:.0}/s skipped={}",
        args.target,
        if args.rate == 0 {
            "max".to_string()
        } else {
            args.rate.to_string()
        },
        secs,
        outcome.sent,
        ok,
        outcome.sent as f64 / secs,
        ok as f64 / secs,
        outcome.skipped
    );
    println!("statuses: {}", statuses.join(" "));
    println!(
        "latency: p50={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms",
        ms(0.50),
        ms(0.99),
        ms(0.999),
        outcome.latency.max() as f64 / 1000.0
    );
}
