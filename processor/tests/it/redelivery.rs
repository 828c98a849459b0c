//! A processor killed mid-stream (no commit, no leave group) and a new one in the same
//! group: every event is handled at least once, and its effects show it exactly once.
//!
//! Both processors are the `page_counter` example, run as child processes, so the first
//! can be killed outright and the second stopped with a real SIGTERM.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use sqlx::PgPool;

use crate::support::{Harness, TOPIC, handled_count, wait_for, webhook};

const HANDLER: &str = "page_*";
const TENANTS: usize = 10;
const PER_BATCH: usize = 300;

fn example_binary() -> PathBuf {
    // Test binaries live in target/<profile>/deps, examples in target/<profile>/examples;
    // `cargo test` and `cargo nextest` build the examples along with the tests.
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let binary = profile_dir.join("examples").join("page_counter");
    assert!(binary.exists(), "{} is not built", binary.display());
    binary
}

/// A running child processor and the event ids it printed as handled.
struct ChildProcessor {
    child: Child,
    handled: Arc<Mutex<Vec<String>>>,
}

impl ChildProcessor {
    fn start(env: Vec<(String, String)>) -> ChildProcessor {
        let mut command = Command::new(example_binary());
        for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("TRIBUTARY_")) {
            command.env_remove(name);
        }
        let mut child = command
            .envs(env)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the example processor");
        let handled = Arc::new(Mutex::new(Vec::new()));
        let lines = handled.clone();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(id) = line
                    .strip_prefix("handled ")
                    .and_then(|r| r.split(' ').next())
                {
                    lines.lock().expect("lines").push(id.to_string());
                }
            }
        });
        ChildProcessor { child, handled }
    }

    fn handled(&self) -> Vec<String> {
        self.handled.lock().expect("lines").clone()
    }
}

fn batch(round: usize) -> Vec<tributary_common::envelope::Envelope> {
    (0..PER_BATCH)
        .map(|i| {
            let n = round * PER_BATCH + i;
            webhook(
                &format!("tenant-{}", n % TENANTS),
                "page_updated",
                json!({"page": {"id": n}}),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_processor_is_replaced_and_effects_happen_once() {
    let harness = Harness::start(3).await;
    let group = "crash-group";
    let client_properties = "session.timeout.ms=6000,heartbeat.interval.ms=500";
    let first_batch = batch(0);
    harness.publish(&first_batch).await;

    // The first one never commits on its own timer, so whatever it handled is delivered again.
    let mut first = ChildProcessor::start(harness.env(&[
        ("PROCESSOR_GROUP_ID", group),
        ("KAFKA_CLIENT_PROPERTIES", client_properties),
        ("PROCESSOR_COMMIT_INTERVAL_MS", "600000"),
        ("PROCESSOR_CONCURRENCY", "4"),
    ]));
    wait_for(
        "the first processor to handle events",
        Duration::from_secs(60),
        || {
            let handled = first.handled().len();
            async move { handled >= 50 }
        },
    )
    .await;
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reaped");
    let pool = harness.pool();
    let recorded_at_kill = settled_handled_count(&pool).await;
    assert!(recorded_at_kill > 0);
    assert_eq!(
        committed_offsets(harness.kafka.bootstrap_servers(), group),
        vec![None; 3]
    );

    let second_batch = batch(1);
    harness.publish(&second_batch).await;
    let mut second = ChildProcessor::start(harness.env(&[
        ("PROCESSOR_GROUP_ID", group),
        ("KAFKA_CLIENT_PROPERTIES", client_properties),
        ("PROCESSOR_CONCURRENCY", "4"),
    ]));
    let total = 2 * PER_BATCH as i64;
    wait_for("every event recorded", Duration::from_secs(90), || {
        let pool = pool.clone();
        async move { handled_count(&pool, HANDLER).await == total }
    })
    .await;

    // SIGTERM: the processor drains, commits and exits 0.
    let status = Command::new("kill")
        .args(["-TERM", &second.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let status = second.child.wait().expect("exit status");
        (status, second)
    });
    let (exit_status, second) = tokio::time::timeout(Duration::from_secs(30), exit)
        .await
        .expect("exits within the shutdown timeout")
        .expect("waiter");
    assert!(exit_status.success(), "{exit_status:?}");

    let mut every: HashSet<String> = first.handled().into_iter().collect();
    every.extend(second.handled());
    for event in first_batch.iter().chain(&second_batch) {
        assert!(
            every.contains(&event.id),
            "event {} never handled",
            event.id
        );
    }
    // The second processor re-read the whole first batch, and ran only what the first
    // had not recorded.
    assert_eq!(second.handled().len() as i64, total - recorded_at_kill);
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT client_key, (value #>> '{}')::bigint FROM tenant_state \
         WHERE key = 'page_events' ORDER BY client_key",
    )
    .fetch_all(&pool)
    .await
    .expect("tenant state");
    assert_eq!(counts.len(), TENANTS);
    for (tenant, count) in counts {
        assert_eq!(
            count,
            total / TENANTS as i64,
            "{tenant} counted an event twice or missed one"
        );
    }
    assert!(
        committed_offsets(harness.kafka.bootstrap_servers(), group)
            .iter()
            .all(Option::is_some)
    );
}

/// The handled-event count once the killed child's last commit, if one was in flight, has
/// landed: Postgres finishes a COMMIT it already received after the client dies, so a
/// single read right after the kill can miss it.
async fn settled_handled_count(pool: &PgPool) -> i64 {
    let mut last = handled_count(pool, HANDLER).await;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = handled_count(pool, HANDLER).await;
        if now == last {
            return now;
        }
        last = now;
    }
}

/// The group's committed offset for each partition of the events topic.
fn committed_offsets(bootstrap: &str, group: &str) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("offset reader");
    let mut partitions = TopicPartitionList::new();
    for p in 0..3 {
        partitions.add_partition(TOPIC, p);
    }
    let committed = consumer
        .committed_offsets(partitions, Duration::from_secs(10))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .collect()
}
