//! What every binary's `main` does around its async body: a runtime, and an exit code.

/// Runs a binary's async `main` on a multi-threaded runtime and turns its result into the
/// exit code, printing the error chain (`{:#}`) rather than a debug dump.
pub fn run_main<F, E>(main: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    run_main_on(0, main)
}

/// Like [`run_main`] on a runtime of `worker_threads` threads: 0 is one per core, 1 runs
/// every task on the calling thread (no hand-offs between threads at all).
pub fn run_main_on<F, E>(worker_threads: usize, main: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let built = match worker_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Runtime::new(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = match built {
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
