//! What every binary's `main` does around its async body: a runtime, and an exit code.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use crate::Config;

/// Runs a binary's async `main` on a runtime of one worker per core (one thread in all on a
/// single core) and turns its result into the exit code, printing the error chain (`{:#}`)
/// rather than a debug dump.
pub fn run_main<F, E>(main: F) -> ExitCode
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    run_main_on(0, main)
}

/// Loads the settings (defaults, then `config_file`, then `TRIBUTARY_*` variables) before
/// any runtime exists, since one of them says how many threads it gets (`threads`), then
/// runs `main` with them as [`run_main_on`] does; a settings error is printed with its causes.
pub fn run_configured<F, Fut, E>(
    config_file: Option<&Path>,
    threads: impl FnOnce(&Config) -> u64,
    main: F,
) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let config = match Config::load(config_file) {
        Ok(config) => config,
        Err(err) => {
            let mut message = format!("error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    // Validation bounds the settings, so the conversion cannot fail on any real target.
    let worker_threads = usize::try_from(threads(&config)).unwrap_or(1);
    run_main_on(worker_threads, main(config))
}

/// The runtime a binary gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// Every task on the calling thread.
    CurrentThread,
    MultiThread {
        workers: usize,
    },
}

/// `worker_threads` as asked (0 is one per core) on a machine where the process may use
/// `cores`: with one core to run on, one worker thread beside the calling thread only adds
/// hand-offs between them (measured: 4 to 5% more webhooks per second for the ingest on one
/// core with the single-thread runtime).
fn flavor(worker_threads: usize, cores: usize) -> Flavor {
    match worker_threads {
        0 if cores <= 1 => Flavor::CurrentThread,
        0 => Flavor::MultiThread { workers: cores },
        1 => Flavor::CurrentThread,
        n => Flavor::MultiThread { workers: n },
    }
}

/// Like [`run_main`] on a runtime of `worker_threads` threads: 0 is one per core the process
/// may run on, 1 runs every task on the calling thread (no hand-offs between threads at all),
/// as does 0 when there is one core.
pub fn run_main_on<F, E>(worker_threads: usize, main: F) -> ExitCode
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    // Counts the cores this process may run on (its CPU affinity and cgroup quota), not the
    // machine's.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let built = match flavor(worker_threads, cores) {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Flavor::MultiThread { workers } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build(),
    };
    let runtime = match built {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    };
    // A blocking task stuck in a client library (a broker that does not answer a close)
    // must not keep a stopped service alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_core_or_one_thread_is_the_single_thread_runtime() {
        assert_eq!(flavor(0, 1), Flavor::CurrentThread);
        assert_eq!(flavor(1, 1), Flavor::CurrentThread);
        assert_eq!(flavor(1, 8), Flavor::CurrentThread);
    }

    #[test]
    fn zero_is_a_worker_per_core_and_more_are_taken_as_asked() {
        assert_eq!(flavor(0, 2), Flavor::MultiThread { workers: 2 });
        assert_eq!(flavor(0, 16), Flavor::MultiThread { workers: 16 });
        assert_eq!(flavor(3, 1), Flavor::MultiThread { workers: 3 });
        assert_eq!(flavor(4, 16), Flavor::MultiThread { workers: 4 });
    }
}
