//! The workspace binaries as child processes of a test: run to completion
//! ([`run`]), or kept running as a [`Service`] started with `TRIBUTARY_*` settings, stopped
//! with a real SIGTERM or killed outright, its memory read from `/proc`, its log kept in a
//! file for when a test fails.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The path of a workspace binary built next to the running test executable. `cargo test`
/// and `cargo nextest run --workspace` build every binary of the workspace before the tests.
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

/// A command for workspace binary `name` with a clean `TRIBUTARY_*` environment.
fn command(name: &str) -> Command {
    let mut command = Command::new(binary(name));
    for (key, _) in std::env::vars() {
        if key.starts_with("TRIBUTARY_") {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "warn");
    command
}

/// Runs workspace binary `name` with `args` and a clean `TRIBUTARY_*` environment plus
/// `env`, to completion.
pub fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = command(name);
    command.args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("binary runs")
}

pub struct Service {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Service {
    /// Starts workspace binary `name` with a clean `TRIBUTARY_*` environment plus `env`;
    /// stdout and stderr go to a log file of its own.
    pub fn start(name: &str, env: &[(String, String)]) -> Service {
        Service::start_with_args(name, &[], env)
    }

    /// [`Service::start`] with command-line arguments.
    pub fn start_with_args(name: &str, args: &[String], env: &[(String, String)]) -> Service {
        let mut command = command(name);
        command.args(args);
        Service::spawn(name, command, env)
    }

    /// Starts `program` (not a workspace binary: a server the test stands up) with `args`
    /// and `env` added to this process's environment, its output in a log file.
    pub fn start_program(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Service {
        let mut command = Command::new(program);
        command.args(args);
        Service::spawn(name, command, env)
    }

    fn spawn(name: &str, mut command: Command, env: &[(String, String)]) -> Service {
        let log = std::env::temp_dir().join(format!(
            "{name}-{}-{}.log",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let out = File::create(&log).expect("create the service log");
        let err = out.try_clone().expect("share the service log");
        command
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Service {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// Its whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no clean-up, no commit, no leaving the group.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status (killed after `deadline` if it has not exited).
    pub fn terminate(&mut self, deadline: Duration) -> Option<ExitStatus> {
        self.signal_terminate();
        self.wait_exit(deadline)
    }

    /// SIGTERM, without waiting for the exit.
    pub fn signal_terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
    }

    /// The exit status once it exits on its own within `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident memory in KiB, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
    }

    /// The end of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.running() {
            self.kill();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
