//! Services of a test stack run as child processes: settings as `TRIBUTARY_*` variables,
//! output kept in a log file, stopped with a real SIGTERM.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::binary;

/// The settings a stack's services share, as environment variables.
#[derive(Debug, Clone, Default)]
pub struct StackEnv {
    vars: Vec<(String, String)>,
}

impl StackEnv {
    /// A stack on `database_url` and `brokers`, installs checked against the key server at
    /// `keys_url`, the app reachable at `app_base_url`, tenants allowed on loopback.
    pub fn new(database_url: &str, brokers: &str, keys_url: &str, app_base_url: &str) -> StackEnv {
        StackEnv::default()
            .with("TRIBUTARY_DATABASE_URL", database_url)
            .with("TRIBUTARY_KAFKA_BROKERS", brokers)
            .with(
                "TRIBUTARY_SECRET_KEY",
                tributary_common::testing::test_secret_key_base64(),
            )
            .with("TRIBUTARY_INSTALL_KEYS_URL", keys_url)
            .with("TRIBUTARY_APP_BASE_URL", app_base_url)
            .with("TRIBUTARY_TENANT_HOST_ALLOWLIST", "127.0.0.1")
            .with("TRIBUTARY_SHUTDOWN_TIMEOUT_SECONDS", "10")
    }

    /// This environment with `key` set to `value` (replacing an earlier value).
    pub fn with(mut self, key: &str, value: impl Into<String>) -> StackEnv {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.to_string(), value.into()));
        self
    }

    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }
}

/// The path of a workspace example built next to this test executable.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} is not built", path.display());
    path
}

/// A service running as a child process.
pub struct ServiceProcess {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl ServiceProcess {
    /// Starts workspace binary `name` with `env`.
    pub fn spawn(name: &str, env: &StackEnv) -> ServiceProcess {
        ServiceProcess::spawn_path(name, &binary(name), env)
    }

    /// Starts the program at `path`, called `name` in messages, with `env`.
    pub fn spawn_path(name: &str, path: &Path, env: &StackEnv) -> ServiceProcess {
        let log = std::env::temp_dir().join(format!(
            "tributary-{name}-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let out = File::create(&log).expect("create the service log");
        let err = out.try_clone().expect("share the service log");
        let mut command = Command::new(path);
        for (key, _) in std::env::vars() {
            if key.starts_with("TRIBUTARY_") {
                command.env_remove(key);
            }
        }
        command
            .env("RUST_LOG", "warn")
            .envs(env.vars().iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        ServiceProcess {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `url` answers 2xx; panics with the log if the service exits or the
    /// wait passes `deadline`.
    pub async fn wait_ok(&mut self, url: &str, deadline: Duration) {
        let http = reqwest::Client::new();
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            if let Ok(answer) = http.get(url).send().await
                && answer.status().is_success()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} never answered {url}:\n{}", self.name, self.log());
    }

    /// Everything the service wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status, if the service exits within `deadline`.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
