//! The shutdown signal every service listens for.

use tokio_util::sync::CancellationToken;

/// Fires once on SIGTERM or Ctrl-C, or when cancelled by hand (tests, `tributary dev`).
pub type Shutdown = CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn on_signals() -> Shutdown {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        trigger.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs a binary's async `main` on a multi-threaded runtime and turns its result into the
/// exit code, printing the error chain (`{:#}`) rather than a debug dump.
pub fn run_main<F, E>(main: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(main) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    };
    // A blocking task stuck in a client library (a broker that does not answer a close)
    // must not keep a stopped service alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}
