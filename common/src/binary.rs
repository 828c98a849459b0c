//! What every binary's `main` does around its async body: a runtime, and an exit code.

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
