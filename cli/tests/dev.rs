//! The README's run command (`tributary dev --demo`) run as a newcomer runs it: the built
//! binary with the README's arguments, in an empty directory, with no database, broker or
//! secret key set up. Only the listen addresses are moved to free ports, so the test can run
//! beside anything else. Besides the round trip as the app, it shows the demo handler acting
//! as the user who created a page, through the simulated authorization server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// How long the test waits for each stage before it gives up: a deadline on waiting, not a
/// claim about speed (the round trip usually takes a few seconds; a loaded machine may need
/// far longer). How long it took is printed.
const WAIT_DEADLINE: Duration = Duration::from_secs(180);
const STOP_DEADLINE: Duration = Duration::from_secs(60);
/// The user the demo site's webhooks name as having caused them.
const DEMO_USER: &str = "557058:demo-user";

/// Kills the child if the test ends before it exited.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The arguments of the README's run command (`cargo run ... --bin tributary -- ARGS`).
fn readme_run_arguments() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let after_heading = readme
        .split_once("Run it")
        .map(|(_, rest)| rest)
        .expect("the README has a `Run it` paragraph");
    let command = after_heading
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .map(|(block, _)| block.trim())
        .expect("the run command is the next sh block");
    let (cargo, args) = command
        .split_once(" -- ")
        .expect("the run command passes arguments after --");
    assert!(
        cargo.starts_with("cargo run") && cargo.ends_with("--bin tributary"),
        "the run command builds the tributary binary with cargo: {command}"
    );
    args.split_whitespace().map(str::to_string).collect()
}

fn start_in(dir: &std::path::Path) -> (Running, Receiver<String>) {
    let args = readme_run_arguments();
    assert_eq!(args, ["dev", "--demo"]);
    let mut command = Command::new(env!("CARGO_BIN_EXE_tributary"));
    command
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars() {
        if name.starts_with("TRIBUTARY_") {
            command.env_remove(name);
        }
    }
    command
        .env("TRIBUTARY_INGEST_LISTEN", "127.0.0.1:0")
        .env("TRIBUTARY_METRICS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info");
    let mut child = command.spawn().expect("the tributary binary starts");
    let (lines_tx, lines_rx) = channel();
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let out_tx = lines_tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = out_tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    (Running(child), lines_rx)
}

/// Every line printed so far, waiting until each of `wanted` has appeared in one.
fn wait_for(lines: &Receiver<String>, seen: &mut Vec<String>, wanted: &[&str], by: Instant) {
    loop {
        let missing: Vec<&&str> = wanted
            .iter()
            .filter(|w| !seen.iter().any(|line| line.contains(**w)))
            .collect();
        if missing.is_empty() {
            return;
        }
        let left = by.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "not seen in time: {missing:?}\noutput so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// The first line printed that contains `text`.
fn line_with<'a>(seen: &'a [String], text: &str) -> &'a str {
    seen.iter()
        .find(|line| line.contains(text))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no line with `{text}` in:\n{}", seen.join("\n")))
}

/// The URL printed on the banner line starting with `label`.
fn banner_url(seen: &[String], label: &str) -> String {
    seen.iter()
        .find_map(|line| line.trim_start().strip_prefix(label))
        .map(|rest| rest.trim().to_string())
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{}", seen.join("\n")))
}

fn get(url: &str) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    })
}

#[test]
fn dev_demo_shows_the_round_trip_as_the_app_and_as_the_user_and_stops_on_ctrl_c() {
    let dir = std::env::temp_dir().join(format!("tributary-dev-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let started = Instant::now();
    let (mut running, lines) = start_in(&dir);
    let mut seen = Vec::new();
    wait_for(
        &lines,
        &mut seen,
        &[
            "in memory, it keeps nothing across restarts",
            "demo tenant installed through a signed install",
            // The processor handled the tenant's lifecycle events...
            "tenant status",
            // ...and a page event, by calling the simulated Confluence back.
            "demo handler: Confluence REST answered GET page",
            "demo handler: Confluence REST answered POST comment",
            // The Forge installation's events took the same way, the call back going
            // through the API gateway with the system token (the Forge site's page title).
            "demo: Forge delivered an event",
            "Forge: design review",
        ],
        started + WAIT_DEADLINE,
    );
    println!("round trip seen after {:?}", started.elapsed());

    // Acting as the user who created the page: the grant went to the simulated
    // authorization server, and the simulated Confluence took the REST call with the bearer
    // token it granted to that user (the demo reports what the simulator recorded).
    let as_user = "demo handler: Confluence REST answered GET page as the user who created it";
    let granted = "demo: the simulated authorization server granted a user token";
    let took =
        "demo: the simulated Confluence took a call with the bearer token granted to the user";
    wait_for(
        &lines,
        &mut seen,
        &[as_user, granted, took],
        Instant::now() + WAIT_DEADLINE,
    );
    for wanted in [as_user, granted, took] {
        let line = line_with(&seen, wanted);
        println!("{line}");
        assert!(line.contains(DEMO_USER), "{line}");
    }
    let took = line_with(&seen, took);
    assert!(
        took.contains("GET") && took.contains("/wiki/api/v2/pages/65601"),
        "the user's call read the created page: {took}"
    );
    assert!(
        !seen
            .iter()
            .any(|line| line.contains("refused a user-token grant")
                || line.contains("refused a user's bearer token")),
        "no user credential was refused:\n{}",
        seen.join("\n")
    );

    let ingest = banner_url(&seen, "ingest");
    let (status, descriptor) = get(&format!("{ingest}/atlassian-connect.json"));
    assert_eq!(status, 200);
    let descriptor: serde_json::Value = serde_json::from_str(&descriptor).expect("JSON");
    assert_eq!(descriptor["key"], "com.example.tributary");
    assert_eq!(
        format!(
            "{}/atlassian-connect.json",
            descriptor["baseUrl"].as_str().unwrap_or("")
        ),
        banner_url(&seen, "descriptor")
    );
    // The handler's log lines come before its batch commits, and the handled counter
    // counts at the commit: the counter may trail the lines by a moment.
    let metrics_url = banner_url(&seen, "metrics");
    let metrics_by = Instant::now() + WAIT_DEADLINE;
    let metrics = loop {
        let (status, metrics) = get(&metrics_url);
        assert_eq!(status, 200);
        if metrics.contains("tributary_processor_events_handled_total")
            || Instant::now() >= metrics_by
        {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(metrics.contains("tributary_ingest_"), "{metrics}");
    assert!(
        metrics.contains("tributary_processor_events_handled_total"),
        "{metrics}"
    );
    assert!(
        dir.join("tributary-dev.db").exists() && dir.join("tributary-dev.key").exists(),
        "the SQLite file and the development key are in the working directory"
    );

    let pid = running.0.id().to_string();
    let signalled = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(signalled.success());
    let stop_by = Instant::now() + STOP_DEADLINE;
    let status = loop {
        if let Some(status) = running.0.try_wait().expect("child status") {
            break status;
        }
        assert!(Instant::now() < stop_by, "still running after Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    while let Ok(line) = lines.try_recv() {
        seen.push(line);
    }
    assert!(status.success(), "exit {status:?}:\n{}", seen.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}
