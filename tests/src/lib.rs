//! Shared helpers for the end-to-end tests: locating the workspace binaries and running them.

pub mod child;
pub mod corpus;
pub mod ingest;
pub mod postgres;
pub mod prometheus;
pub mod verdict;
pub mod world;

/// The tenant-state key where the test processor appends the ids of handled events, in the
/// order it handled them.
pub const HANDLED_KEY: &str = "handled_event_ids";
/// The test processor's handler name, which keys its handled-event records.
pub const HANDLER_NAME: &str = "e2e.record_and_comment";

use std::path::PathBuf;
use std::process::{Command, Output};

/// The path of a workspace binary built next to this test executable. `cargo test` and
/// `cargo nextest run --workspace` build every binary of the workspace before the tests.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (cargo build --workspace)",
        path.display()
    );
    path
}

/// Runs a workspace binary with `args` and a clean TRIBUTARY_* environment plus `env`.
pub fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary(name));
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("TRIBUTARY_") {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "warn");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("binary runs")
}
