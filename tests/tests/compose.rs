//! The compose stack run as far as it can be without a Docker engine: `docker-compose.yml`
//! (as `docker-compose config` resolves it with no `.env`, demo profile on) is read, and
//! each service's command is started with its environment as a local process. Stand-ins
//! take the images that cannot run here: tansu (a Kafka-protocol broker) for the Kafka
//! image and the admin API for its topic tool, a PostgreSQL cluster of the test's own,
//! created as the postgres image creates its user and database, and the real `prometheus`
//! binary with the compose command and the mounted config. Grafana has no stand-in; its
//! provisioning is checked in `deploy.rs`.
//!
//! Every service gets a loopback port for each port it is reached on, and what names
//! another service (`kafka:9092`, `http://demo-site:7999`, a bare `demo-site`), its own
//! listen address (`0.0.0.0:9464`), a port published to the host (`localhost:8080`) or a
//! path in a volume is rewritten to match. Then: every health check passes, the one-shot
//! key, migration and topic jobs finish, the demo profile's traffic reaches the processors
//! and the demo app's calls reach the simulated Confluence, Prometheus scrapes every
//! target, and the services stop cleanly.
//!
//! It needs the tansu binary (`TANSU_BINARY`, or `tansu` on PATH; `.ci/run` fetches it) and
//! skips with a printed reason without it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_norway::Value;
use tributary_devkit::harness::{Service, binary};
use tributary_devkit::kafka::{create_topic, topic_partitions, wait_until_serving};
use tributary_devkit::{PgCluster, free_port};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn found(program: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

fn tansu_binary() -> Option<PathBuf> {
    match std::env::var("TANSU_BINARY") {
        Ok(path) if !path.trim().is_empty() => Some(PathBuf::from(path.trim())),
        _ => found("tansu"),
    }
}

/// The compose file as a fresh clone with no `.env` sees it, demo profile on.
fn resolved_compose() -> Value {
    let empty = std::env::temp_dir().join(format!(
        "tributary-compose-run-{}.env",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&empty, "").expect("an empty env file");
    let out = Command::new("docker-compose")
        .current_dir(root())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .arg("--env-file")
        .arg(&empty)
        .args(["--profile", "demo", "-f", "docker-compose.yml", "config"])
        .output()
        .expect("docker-compose runs (apt-get install docker-compose; .ci/run does this)");
    let _ = std::fs::remove_file(&empty);
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_norway::from_slice(&out.stdout).expect("YAML")
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| items.iter().map(text).collect())
        .unwrap_or_default()
}

fn environment(service: &Value) -> Vec<(String, String)> {
    service["environment"]
        .as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| (text(k), text(v)))
        .collect()
}

/// `5s`, `10s`, `1m` as compose writes durations.
fn duration(value: &Value, default: Duration) -> Duration {
    let raw = text(value);
    let (number, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    match (number.parse::<u64>(), unit) {
        (Ok(n), "s") => Duration::from_secs(n),
        (Ok(n), "m") => Duration::from_secs(n * 60),
        (Ok(n), "ms") => Duration::from_millis(n),
        _ => default,
    }
}

/// How a text is read when it is rewritten.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// A setting or a flag's value: host names stand for services.
    Value,
    /// A health check, run inside the container: its loopback is the service itself.
    Health,
}

/// The compose network laid out on loopback.
struct Network {
    services: BTreeMap<String, Value>,
    /// (service, replica, container port) -> loopback port.
    ports: Mutex<HashMap<(String, usize, u16), u16>>,
    /// Published host port -> (service, container port).
    published: HashMap<u16, (String, u16)>,
    /// Named volume -> directory.
    volume_dirs: HashMap<String, PathBuf>,
    /// Bind-mount sources replaced by a rewritten copy.
    bind_overrides: Mutex<HashMap<String, PathBuf>>,
    dir: PathBuf,
}

fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

impl Network {
    fn new(compose: &Value) -> Network {
        let services: BTreeMap<String, Value> = compose["services"]
            .as_mapping()
            .expect("services")
            .iter()
            .map(|(k, v)| (text(k), v.clone()))
            .collect();
        let mut published = HashMap::new();
        for (name, service) in &services {
            for port in service["ports"].as_sequence().into_iter().flatten() {
                if let (Some(host), Some(target)) =
                    (port["published"].as_u64(), port["target"].as_u64())
                {
                    published.insert(host as u16, (name.clone(), target as u16));
                }
            }
        }
        let dir = std::env::temp_dir().join(format!(
            "tributary-compose-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let mut volume_dirs = HashMap::new();
        for volume in compose["volumes"]
            .as_mapping()
            .into_iter()
            .flatten()
            .map(|(k, _)| text(k))
        {
            let path = dir.join("volumes").join(&volume);
            std::fs::create_dir_all(&path).expect("volume directory");
            volume_dirs.insert(volume, path);
        }
        Network {
            services,
            ports: Mutex::new(HashMap::new()),
            published,
            volume_dirs,
            bind_overrides: Mutex::new(HashMap::new()),
            dir,
        }
    }

    fn replicas(&self, service: &str) -> usize {
        self.services
            .get(service)
            .and_then(|s| s["deploy"]["replicas"].as_u64())
            .unwrap_or(1) as usize
    }

    /// The loopback port `service` (replica `replica`) is reached at for `port`.
    fn port(&self, service: &str, replica: usize, port: u16) -> u16 {
        *self
            .ports
            .lock()
            .expect("ports")
            .entry((service.to_string(), replica, port))
            .or_insert_with(free_port)
    }

    /// Makes `service`'s `port` the given loopback port (a stand-in that picked its own).
    fn pin(&self, service: &str, port: u16, at: u16) {
        self.ports
            .lock()
            .expect("ports")
            .insert((service.to_string(), 0, port), at);
    }

    /// (source, target) of each mount, sources as paths here.
    fn mounts(&self, service: &str) -> Vec<(PathBuf, String)> {
        let overrides = self.bind_overrides.lock().expect("overrides").clone();
        let mut mounts: Vec<(PathBuf, String)> = strings(&self.services[service]["volumes"])
            .iter()
            .filter_map(|spec| {
                let mut parts = spec.split(':');
                let (source, target) = (parts.next()?, parts.next()?);
                let path = match self.volume_dirs.get(source) {
                    Some(dir) => dir.clone(),
                    None => overrides
                        .get(source)
                        .cloned()
                        .unwrap_or_else(|| PathBuf::from(source)),
                };
                Some((path, target.to_string()))
            })
            .collect();
        // The deepest mount point first.
        mounts.sort_by_key(|(_, target)| std::cmp::Reverse(target.len()));
        mounts
    }

    fn rewrite_path(&self, service: &str, value: &str) -> String {
        for (source, target) in self.mounts(service) {
            if value == target || value.starts_with(&format!("{target}/")) {
                return format!("{}{}", source.display(), &value[target.len()..]);
            }
        }
        value.to_string()
    }

    /// `value` as the service (replica `replica`) sees the network here.
    fn rewrite(&self, service: &str, replica: usize, value: &str, scope: Scope) -> String {
        let value = self.rewrite_path(service, value);
        // host:port first.
        let chars: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        while i < chars.len() {
            let start = i;
            while i < chars.len() && is_host_char(chars[i]) {
                i += 1;
            }
            let token: String = chars[start..i].iter().collect();
            let digits_from = i + 1;
            let mut digits_to = digits_from;
            while digits_to < chars.len() && chars[digits_to].is_ascii_digit() {
                digits_to += 1;
            }
            let port_follows = i < chars.len() && chars[i] == ':' && digits_to > digits_from;
            if !token.is_empty() && port_follows {
                let port: u16 = chars[digits_from..digits_to]
                    .iter()
                    .collect::<String>()
                    .parse()
                    .unwrap_or(0);
                let target = match token.as_str() {
                    "0.0.0.0" => Some((service.to_string(), replica, port)),
                    "127.0.0.1" | "localhost" if scope == Scope::Health => {
                        Some((service.to_string(), replica, port))
                    }
                    "127.0.0.1" | "localhost" => {
                        self.published.get(&port).map(|(s, p)| (s.clone(), 0, *p))
                    }
                    name if self.services.contains_key(name) => Some((name.to_string(), 0, port)),
                    _ => None,
                };
                if let Some((s, r, p)) = target {
                    out.push_str(&format!("127.0.0.1:{}", self.port(&s, r, p)));
                    i = digits_to;
                    continue;
                }
            }
            if !token.is_empty() {
                let scheme = chars[i..].iter().take(3).collect::<String>() == "://";
                let bare_service = scope == Scope::Value && self.services.contains_key(&token);
                if bare_service && !scheme {
                    out.push_str("127.0.0.1");
                } else {
                    out.push_str(&token);
                }
            }
            if i < chars.len() {
                out.push(chars[i]);
                i += 1;
            }
        }
        out
    }

    fn env(&self, service: &str, replica: usize) -> Vec<(String, String)> {
        environment(&self.services[service])
            .into_iter()
            .map(|(k, v)| {
                let v = self.rewrite(service, replica, &v, Scope::Value);
                (k, v)
            })
            .collect()
    }

    /// Command arguments: a flag's value is a setting; other arguments (subcommands, which
    /// may share a service's name) keep their words and only have their addresses moved.
    fn args(&self, service: &str, replica: usize, args: &[String]) -> Vec<String> {
        args.iter()
            .map(|arg| match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => format!(
                    "{flag}={}",
                    self.rewrite(service, replica, value, Scope::Value)
                ),
                _ => self.rewrite(service, replica, arg, Scope::Health),
            })
            .collect()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a started service became.
enum Running {
    Processes(Vec<Service>),
    /// Kept until the stack is dropped, which stops it.
    Postgres {
        _cluster: PgCluster,
    },
    /// A one-shot that finished, with what it printed.
    Finished(String),
    Skipped(String),
}

struct Stack {
    net: Network,
    tansu: PathBuf,
    running: BTreeMap<String, Running>,
    /// Health checks that passed, by service (replicas each).
    healthy: Vec<String>,
}

impl Stack {
    fn image(&self, service: &str) -> String {
        text(&self.net.services[service]["image"])
    }

    /// Starts `service` after what it depends on, as its conditions say.
    fn up(&mut self, service: &str) {
        if self.running.contains_key(service) {
            return;
        }
        let depends: Vec<(String, String)> = self.net.services[service]["depends_on"]
            .as_mapping()
            .into_iter()
            .flatten()
            .map(|(k, v)| (text(k), text(&v["condition"])))
            .collect();
        for (dependency, condition) in depends {
            self.up(&dependency);
            match condition.as_str() {
                "service_healthy" => self.wait_healthy(&dependency),
                "service_completed_successfully" => assert!(
                    matches!(self.running[&dependency], Running::Finished(_)),
                    "{service} waits for {dependency} to finish"
                ),
                _ => {}
            }
        }
        let started = self.start(service);
        self.running.insert(service.to_string(), started);
    }

    fn start(&mut self, service: &str) -> Running {
        let image = self.image(service);
        let definition = self.net.services[service].clone();
        let command = strings(&definition["command"]);
        if image == "tributary:local" {
            let replicas = self.net.replicas(service);
            let is_one_shot = text(&definition["restart"]) == "no";
            let mut processes = Vec::new();
            for replica in 0..replicas {
                let args = self.net.args(service, replica, &command[1..]);
                let env = self.net.env(service, replica);
                let name = format!("{service}-{replica}");
                let mut process = Service::start_with_args(&command[0], &args, &env);
                if is_one_shot {
                    let status = process.wait_exit(Duration::from_secs(120));
                    let log = process.log();
                    assert!(
                        status.is_some_and(|s| s.success()),
                        "one-shot {service} did not finish: {status:?}\n{log}"
                    );
                    return Running::Finished(log);
                }
                assert!(
                    process.running(),
                    "{name} exited at start:\n{}",
                    process.log()
                );
                processes.push(process);
            }
            return Running::Processes(processes);
        }
        if image.starts_with("postgres:") {
            return Running::Postgres {
                _cluster: self.postgres(service),
            };
        }
        if image.starts_with("apache/kafka:") {
            if definition["entrypoint"].is_null() {
                return self.kafka(service);
            }
            return self.kafka_topics(service, &command);
        }
        if image.starts_with("prom/prometheus:") {
            return self.prometheus(service, &command);
        }
        Running::Skipped(format!("{image} has no stand-in here"))
    }

    /// The postgres image: a cluster, its superuser and database from the image's settings.
    fn postgres(&self, service: &str) -> PgCluster {
        let env: HashMap<String, String> = environment(&self.net.services[service])
            .into_iter()
            .collect();
        let cluster = PgCluster::start();
        self.net.pin(service, 5432, cluster.port);
        let user = env
            .get("POSTGRES_USER")
            .cloned()
            .unwrap_or_else(|| "postgres".into());
        let password = env.get("POSTGRES_PASSWORD").cloned().unwrap_or_default();
        let database = env
            .get("POSTGRES_DB")
            .cloned()
            .unwrap_or_else(|| user.clone());
        let sql = format!(
            "CREATE ROLE \"{user}\" LOGIN SUPERUSER PASSWORD '{password}'; \
             CREATE DATABASE \"{database}\" OWNER \"{user}\";"
        );
        for statement in sql.split("; ") {
            let out = Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &cluster.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", statement])
                .output()
                .expect("psql runs");
            assert!(
                out.status.success(),
                "{statement}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster
    }

    /// The Kafka image: tansu, listening where the services reach `kafka:9092`.
    fn kafka(&self, service: &str) -> Running {
        let advertised = environment(&self.net.services[service])
            .into_iter()
            .find(|(k, _)| k == "KAFKA_ADVERTISED_LISTENERS")
            .map(|(_, v)| v)
            .unwrap_or_default();
        let port: u16 = advertised
            .split(',')
            .find_map(|listener| listener.strip_prefix(&format!("PLAINTEXT://{service}:")))
            .and_then(|p| p.parse().ok())
            .expect("kafka advertises a PLAINTEXT listener to the services");
        let at = self.net.port(service, 0, port);
        let url = format!("tcp://127.0.0.1:{at}");
        let args: Vec<String> = [
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let process = Service::start_program("tansu", &self.tansu, &args, &[]);
        Running::Processes(vec![process])
    }

    /// The topic one-shot: its topics and partition count, created through the admin API
    /// (the image's `kafka-topics.sh` is not here).
    fn kafka_topics(&self, service: &str, command: &[String]) -> Running {
        let script = command.join(" ");
        let topics: Vec<String> = script
            .split_once("for topic in ")
            .and_then(|(_, rest)| rest.split_once(';'))
            .map(|(list, _)| list.split_whitespace().map(str::to_string).collect())
            .expect("the topic job loops over its topics");
        let partitions: i32 = script
            .split_once("--partitions ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("the topic job names a partition count");
        let bootstrap = script
            .split_once("--bootstrap-server ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .map(|b| self.net.rewrite(service, 0, b, Scope::Value))
            .expect("the topic job names the broker");
        for topic in &topics {
            create_topic(&bootstrap, topic, partitions)
                .unwrap_or_else(|e| panic!("{service}: {topic}: {e}"));
            assert_eq!(
                topic_partitions(&bootstrap, topic),
                Some(partitions as usize)
            );
        }
        Running::Finished(format!("created {topics:?} with {partitions} partitions"))
    }

    /// The real Prometheus with the compose command, its config a copy of the mounted one
    /// with the targets moved (DNS service discovery becomes the replicas' addresses).
    fn prometheus(&self, service: &str, command: &[String]) -> Running {
        let program = found("prometheus").expect("apt-get install prometheus (.ci/run does this)");
        let config_arg = command
            .iter()
            .find_map(|a| a.strip_prefix("--config.file="))
            .expect("--config.file");
        let config_path = PathBuf::from(self.net.rewrite_path(service, config_arg));
        let config_dir = config_path.parent().expect("config dir").to_path_buf();
        let copy = self.net.dir.join("prometheus-config");
        std::fs::create_dir_all(&copy).expect("config copy");
        for entry in std::fs::read_dir(&config_dir)
            .expect("mounted config")
            .flatten()
        {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).expect("copy");
        }
        let mut config: Value =
            serde_norway::from_str(&std::fs::read_to_string(&config_path).expect("read"))
                .expect("yaml");
        for job in config["scrape_configs"]
            .as_sequence_mut()
            .into_iter()
            .flatten()
        {
            let mut targets = Vec::new();
            for group in strings_of_groups(&job["static_configs"]) {
                targets.push(self.net.rewrite(service, 0, &group, Scope::Value));
            }
            for sd in job["dns_sd_configs"].as_sequence().into_iter().flatten() {
                let port = sd["port"].as_u64().unwrap_or(0) as u16;
                for name in strings(&sd["names"]) {
                    if self.net.services.contains_key(&name) {
                        for replica in 0..self.net.replicas(&name) {
                            targets
                                .push(format!("127.0.0.1:{}", self.net.port(&name, replica, port)));
                        }
                    }
                }
            }
            if let Some(map) = job.as_mapping_mut() {
                map.remove("dns_sd_configs");
                let targets: Vec<Value> = targets.into_iter().map(Value::String).collect();
                let mut group = serde_norway::Mapping::new();
                group.insert("targets".into(), Value::Sequence(targets));
                map.insert(
                    "static_configs".into(),
                    Value::Sequence(vec![Value::Mapping(group)]),
                );
            }
        }
        std::fs::write(
            copy.join(config_path.file_name().expect("file name")),
            serde_norway::to_string(&config).expect("yaml"),
        )
        .expect("write the config");
        // The mount now serves the rewritten copy.
        let source = strings(&self.net.services[service]["volumes"])
            .iter()
            .find_map(|spec| {
                let mut parts = spec.split(':');
                let (source, target) = (parts.next()?, parts.next()?);
                config_arg.starts_with(target).then(|| source.to_string())
            })
            .expect("the config is mounted");
        self.net
            .bind_overrides
            .lock()
            .expect("overrides")
            .insert(source, copy);
        let mut args = self.net.args(service, 0, command);
        // The image listens on 9090; here it listens where its published port leads.
        args.push(format!(
            "--web.listen-address=127.0.0.1:{}",
            self.net.port(service, 0, 9090)
        ));
        Running::Processes(vec![Service::start_program(service, &program, &args, &[])])
    }

    /// Waits until `service`'s health check passes (each replica), within its retries.
    fn wait_healthy(&mut self, service: &str) {
        let definition = self.net.services[service].clone();
        let check = &definition["healthcheck"];
        let interval =
            duration(&check["interval"], Duration::from_secs(5)).min(Duration::from_secs(1));
        let patience = duration(&check["interval"], Duration::from_secs(5))
            * check["retries"].as_u64().unwrap_or(3) as u32
            + duration(&check["start_period"], Duration::ZERO);
        for replica in 0..self.net.replicas(service) {
            let deadline = Instant::now() + patience;
            loop {
                if self.check_once(service, replica, check) {
                    self.healthy.push(format!("{service}-{replica}"));
                    break;
                }
                if let Some(Running::Processes(processes)) = self.running.get_mut(service) {
                    let last = processes.len() - 1;
                    let process = &mut processes[replica.min(last)];
                    assert!(process.running(), "{service} exited:\n{}", process.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "{service}-{replica} never became healthy:\n{}",
                    self.log_of(service)
                );
                std::thread::sleep(interval);
            }
        }
    }

    fn check_once(&self, service: &str, replica: usize, check: &Value) -> bool {
        let test = strings(&check["test"]);
        let image = self.image(service);
        if image.starts_with("apache/kafka:") {
            // The image's tool asks the broker for its API versions: a metadata request.
            let bootstrap = format!("127.0.0.1:{}", self.net.port(service, 0, 9092));
            return wait_until_serving(&bootstrap, Duration::from_secs(2)).is_ok();
        }
        let mut command = match test.first().map(String::as_str) {
            Some("CMD") => {
                let program = if image == "tributary:local" {
                    binary(&test[1])
                } else {
                    PathBuf::from(&test[1])
                };
                let mut command = Command::new(program);
                command.args(self.net.args(service, replica, &test[2..]));
                command
            }
            Some("CMD-SHELL") => {
                let mut command = Command::new("sh");
                command.args(["-c", &test[1]]);
                command
            }
            _ => return true,
        };
        if image.starts_with("postgres:") {
            // Inside the image the server is local; here it is the stand-in cluster.
            command
                .env("PGHOST", "127.0.0.1")
                .env("PGPORT", self.net.port(service, 0, 5432).to_string());
        }
        command
            .output()
            .map(|out| out.status.success())
            .unwrap_or(false)
    }

    fn log_of(&self, service: &str) -> String {
        match self.running.get(service) {
            Some(Running::Processes(processes)) => processes
                .iter()
                .map(|p| p.log_tail(30))
                .collect::<Vec<_>>()
                .join("\n---\n"),
            Some(Running::Finished(log)) => log.clone(),
            _ => String::new(),
        }
    }

    /// The metrics text of `service`'s replica `replica`.
    async fn metrics(&self, http: &reqwest::Client, service: &str, replica: usize) -> String {
        let url = format!(
            "http://127.0.0.1:{}/metrics",
            self.net.port(service, replica, 9464)
        );
        match http.get(url).send().await {
            Ok(answer) => answer.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

fn strings_of_groups(groups: &Value) -> Vec<String> {
    groups
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|group| strings(&group["targets"]))
        .collect()
}

/// The sum of every sample of `metric` whose labels contain each of `labels`.
fn total(metrics: &str, metric: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| labels.iter().all(|l| line.contains(l)))
        .filter_map(|line| {
            line.rsplit_once(' ')
                .and_then(|(_, v)| v.parse::<f64>().ok())
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_stack_runs_as_local_processes_with_the_demo_profile() {
    let Some(tansu) = tansu_binary().filter(|p| p.exists()) else {
        println!(
            "SKIPPED the_compose_stack_runs_as_local_processes_with_the_demo_profile: no tansu \
             binary to stand in for the Kafka image (set TANSU_BINARY or put tansu on PATH; \
             .ci/run fetches it)"
        );
        return;
    };
    let compose = resolved_compose();
    let mut stack = Stack {
        net: Network::new(&compose),
        tansu,
        running: BTreeMap::new(),
        healthy: Vec::new(),
    };
    let names: Vec<String> = stack.net.services.keys().cloned().collect();
    let mut stack = tokio::task::spawn_blocking(move || {
        for name in &names {
            stack.up(name);
        }
        for name in &names {
            let checked = !stack.net.services[name]["healthcheck"].is_null();
            let done = stack
                .healthy
                .iter()
                .any(|h| h.starts_with(&format!("{name}-")));
            if checked && !done {
                stack.wait_healthy(name);
            }
        }
        stack
    })
    .await
    .expect("the stack comes up");

    // Every health check passed, for every replica.
    let with_checks: Vec<&String> = stack
        .net
        .services
        .iter()
        .filter(|(_, s)| !s["healthcheck"].is_null())
        .map(|(n, _)| n)
        .collect();
    for name in &with_checks {
        for replica in 0..stack.net.replicas(name) {
            assert!(
                stack.healthy.contains(&format!("{name}-{replica}")),
                "{name}-{replica} health"
            );
        }
    }
    // The one-shots finished: a development key (said loudly), migrations, topics.
    for job in ["dev-key", "migrate", "kafka-topics"] {
        assert!(
            matches!(stack.running.get(job), Some(Running::Finished(_))),
            "{job} finished"
        );
    }
    assert!(
        stack.log_of("dev-key").contains("DEVELOPMENT key"),
        "{}",
        stack.log_of("dev-key")
    );
    assert!(stack.log_of("migrate").contains("migrations applied"));

    // The demo's traffic reaches the processors, and the demo app calls the simulated
    // Confluence back.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut consumed, mut app_handled, mut app_calls);
    loop {
        consumed = 0.0;
        for replica in 0..stack.net.replicas("processor") {
            let metrics = stack.metrics(&http, "processor", replica).await;
            consumed += total(&metrics, "tributary_processor_events_consumed_total", &[]);
        }
        let app = stack.metrics(&http, "demo-app", 0).await;
        app_handled = total(
            &app,
            "tributary_processor_events_handled_total",
            &["outcome=\"success\""],
        );
        app_calls = total(
            &app,
            "tributary_confluence_requests_total",
            &["status_class=\"2xx\""],
        );
        if (consumed >= 20.0 && app_handled >= 10.0 && app_calls >= 5.0)
            || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let ingest = stack.metrics(&http, "ingest", 0).await;
    let accepted = total(
        &ingest,
        "tributary_ingest_requests_total",
        &["outcome=\"accepted\""],
    );
    println!(
        "compose stack: ingest accepted {accepted} requests; processors consumed {consumed} \
         events; the demo app handled {app_handled} and made {app_calls} successful REST calls"
    );
    assert!(
        consumed >= 20.0 && app_handled >= 10.0 && app_calls >= 5.0,
        "the demo traffic did not flow through:\n{}\n---\n{}\n---\n{}",
        stack.log_of("demo-site"),
        stack.log_of("demo-app"),
        stack.log_of("processor")
    );

    // Prometheus scrapes every target: the ingest, each processor replica, the demo app and
    // itself.
    let prometheus = format!("http://127.0.0.1:{}", stack.net.port("prometheus", 0, 9090));
    let mut expected: HashSet<u16> = HashSet::from([stack.net.port("ingest", 0, 9464)]);
    for replica in 0..stack.net.replicas("processor") {
        expected.insert(stack.net.port("processor", replica, 9464));
    }
    expected.insert(stack.net.port("demo-app", 0, 9464));
    expected.insert(stack.net.port("prometheus", 0, 9090));
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen: Vec<(String, String)>;
    loop {
        seen = Vec::new();
        if let Ok(answer) = http
            .get(format!("{prometheus}/api/v1/targets"))
            .send()
            .await
            && let Ok(body) = answer.json::<serde_json::Value>().await
        {
            for target in body["data"]["activeTargets"]
                .as_array()
                .into_iter()
                .flatten()
            {
                seen.push((
                    target["scrapeUrl"].as_str().unwrap_or_default().to_string(),
                    target["health"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        let up: HashSet<u16> = seen
            .iter()
            .filter(|(_, health)| health == "up")
            .filter_map(|(url, _)| url::Url::parse(url).ok().and_then(|u| u.port()))
            .collect();
        if (up == expected && seen.len() == expected.len()) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(
        seen.len() == expected.len() && seen.iter().all(|(_, health)| health == "up"),
        "Prometheus targets: {seen:?}, expected ports {expected:?}\n{}",
        stack.log_of("prometheus")
    );
    for (name, running) in &stack.running {
        if let Running::Skipped(why) = running {
            println!("compose stack: {name} not run ({why})");
        }
    }

    // The services stop cleanly on SIGTERM, as `docker compose down` asks them to.
    let stopping = ["demo-site", "demo-app", "processor", "ingest"];
    for name in stopping {
        if let Some(Running::Processes(processes)) = stack.running.get_mut(name) {
            for process in processes {
                let status = process.terminate(Duration::from_secs(40));
                assert!(
                    status.is_some_and(|s| s.success()),
                    "{name} stops cleanly: {status:?}\n{}",
                    process.log_tail(30)
                );
            }
        }
    }
    let stack = tokio::task::spawn_blocking(move || {
        drop(stack);
    });
    stack.await.expect("the stand-ins stop");
}

#[test]
fn addresses_are_moved_to_where_the_services_listen_here() {
    let compose: Value = serde_norway::from_str(
        r#"
services:
  ingest:
    ports: [{published: 8080, target: 8080}]
    environment:
      A: "kafka:9092"
      B: "postgres://u:p@postgres:5432/db"
      C: "*.atlassian.net,demo-site"
      D: "http://localhost:8080"
      E: "0.0.0.0:9464"
      F: "tributary-processor"
  kafka: {}
  postgres: {}
  demo-site: {}
volumes: {}
"#,
    )
    .expect("yaml");
    let net = Network::new(&compose);
    net.pin("kafka", 9092, 19092);
    net.pin("postgres", 5432, 15432);
    let env: HashMap<String, String> = net.env("ingest", 0).into_iter().collect();
    assert_eq!(env["A"], "127.0.0.1:19092");
    assert_eq!(env["B"], "postgres://u:p@127.0.0.1:15432/db");
    assert_eq!(env["C"], "*.atlassian.net,127.0.0.1");
    let own = net.port("ingest", 0, 8080);
    assert_eq!(env["D"], format!("http://127.0.0.1:{own}"));
    assert_eq!(
        env["E"],
        format!("127.0.0.1:{}", net.port("ingest", 0, 9464))
    );
    assert_eq!(env["F"], "tributary-processor");
    let args = net.args(
        "ingest",
        0,
        &["demo-site".to_string(), "--host=demo-site".to_string()],
    );
    assert_eq!(args, ["demo-site", "--host=127.0.0.1"]);
    assert_eq!(
        net.rewrite("ingest", 0, "http://127.0.0.1:8080/readyz", Scope::Health),
        format!("http://127.0.0.1:{own}/readyz")
    );
}
