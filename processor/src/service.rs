//! What a processor binary's `main` does: the settings first, since they say what runtime
//! to build (`processor_worker_threads`), then the binary's async body on that runtime.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use tributary_common::Config;
use tributary_common::binary::run_configured;

/// Loads the settings (defaults, then `config_file`, then `TRIBUTARY_*` variables) and runs
/// `main` with them on a runtime of `processor_worker_threads` threads; the exit code says
/// how it ended, and an error is printed with its causes.
pub fn run_main<F, Fut, E>(config_file: Option<&Path>, main: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    run_configured(config_file, |config| config.processor_worker_threads, main)
}
