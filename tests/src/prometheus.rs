//! The real Prometheus server (Debian package `prometheus`), run by a test against services
//! on loopback, and its HTTP query API.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tributary_devkit::free_port;

pub struct Prometheus {
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (job name, host:port) every second.
    pub fn start(targets: &[(&str, String)]) -> Prometheus {
        let found = Command::new("sh")
            .args(["-c", "command -v prometheus"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "`prometheus` is missing: apt-get install prometheus (.ci/run does this)"
        );
        let dir = std::env::temp_dir().join(format!(
            "tributary-prometheus-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(dir.join("data")).expect("prometheus directory");
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for (job, target) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ));
        }
        std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Prometheus { port, child, dir }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(response) = reqwest::get(format!("{}/-/ready", self.url())).await
                && response.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("prometheus did not become ready in {timeout:?}");
    }

    /// Runs an instant query; the number of series it returned.
    pub async fn series_count(&self, query: &str) -> Result<usize, String> {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", query)])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("query failed: {body}"));
        }
        Ok(body["data"]["result"].as_array().map(Vec::len).unwrap_or(0))
    }

    /// Whether every target is up.
    pub async fn targets_up(&self) -> bool {
        matches!(self.series_count("up == 0").await, Ok(0))
            && matches!(self.series_count("up == 1").await, Ok(n) if n > 0)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
