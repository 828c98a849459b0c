//! A throwaway PostgreSQL cluster of a test's own (`initdb` + `pg_ctl` on a free port), so
//! a test can stop and start the database without touching anything else.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgCluster {
    pub port: u16,
    data_dir: PathBuf,
    bin_dir: PathBuf,
    running: bool,
}

/// The directory holding `initdb` and `pg_ctl` (Debian keeps them out of PATH).
fn find_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("initdb not found: install PostgreSQL server binaries or set PG_BIN_DIR")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgCluster {
    /// Creates and starts a cluster with trust auth on a free loopback port.
    pub fn start() -> PgCluster {
        let bin_dir = find_bin_dir();
        let port = free_port();
        let data_dir = std::env::temp_dir().join(format!(
            "tributary-pg-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&data_dir).expect("create cluster directory");
        let cluster = PgCluster {
            port,
            data_dir,
            bin_dir,
            running: false,
        };
        if running_as_root() {
            // PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&cluster.data_dir)
                .status()
                .expect("chown");
            assert!(status.success(), "chown of the cluster directory failed");
        }
        let initdb = cluster.bin_dir.join("initdb");
        let out = cluster
            .command(&initdb)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&cluster.data_dir)
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cluster = cluster;
        cluster.start_server();
        cluster
    }

    fn command(&self, program: &Path) -> Command {
        if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_server(&mut self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off -c max_connections=200",
            self.port
        );
        let out = self
            .command(&self.bin_dir.join("pg_ctl"))
            .args(["-w", "-t", "30", "-D"])
            .arg(&self.data_dir)
            .args(["-o", &options, "-l"])
            .arg(self.data_dir.join("server.log"))
            .arg("start")
            .output()
            .expect("pg_ctl start runs");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.running = true;
    }

    /// Stops the server at once (`-m immediate`), as an outage would.
    pub fn stop_server(&mut self) {
        let _ = self
            .command(&self.bin_dir.join("pg_ctl"))
            .args(["-w", "-m", "immediate", "-D"])
            .arg(&self.data_dir)
            .arg("stop")
            .output();
        self.running = false;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            self.stop_server();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[cfg(test)]
mod tests {
    use super::*;

    use sqlx::Connection;

    #[tokio::test]
    async fn a_cluster_of_our_own_stops_and_starts() {
        let mut cluster = PgCluster::start();
        let url = cluster.url("postgres");
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .expect("query");
        assert_eq!(one, 1);
        cluster.stop_server();
        assert!(
            sqlx::PgConnection::connect(&url).await.is_err(),
            "stopped means unreachable"
        );
        cluster.start_server();
        assert!(sqlx::PgConnection::connect(&url).await.is_ok());
    }
}
