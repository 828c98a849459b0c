//! Sending signed webhooks at a fixed rate or as fast as the target takes them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::Semaphore;
use tributary_devkit::Token;

use super::tenants::LoadTenant;

/// What one run measured.
pub struct Outcome {
    pub sent: u64,
    pub statuses: BTreeMap<String, u64>,
    /// Answer latency in microseconds, from the moment each request was due.
    pub latency: Histogram<u64>,
    pub elapsed: Duration,
    /// Requests a fixed-rate run could not start because `concurrency` were in flight.
    pub skipped: u64,
}

/// How long one run lasts.
#[derive(Clone, Copy)]
pub enum Length {
    Time(Duration),
    Requests(u64),
}

pub struct Traffic {
    pub http: reqwest::Client,
    pub target: String,
    pub event: String,
    pub tenants: Vec<LoadTenant>,
    pub concurrency: usize,
}

struct Shared {
    statuses: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<Histogram<u64>>,
}

impl Traffic {
    /// `rate` requests per second (0: as fast as the target answers) for `length`.
    pub async fn run(self: Arc<Self>, rate: u64, length: Length) -> anyhow::Result<Outcome> {
        // Microseconds, up to two minutes, three significant digits.
        let histogram = Histogram::new_with_bounds(1, 120_000_000, 3)?;
        let shared = Arc::new(Shared {
            statuses: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(histogram.clone()),
        });
        let permits = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let start = Instant::now();
        let mut sent = 0u64;
        let mut skipped = 0u64;
        let mut tasks = tokio::task::JoinSet::new();
        let interval = (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64));
        let more = |sent: u64| match length {
            Length::Time(duration) => start.elapsed() < duration,
            Length::Requests(n) => sent < n,
        };
        while more(sent) {
            let due = match interval {
                Some(step) => {
                    let due = start + step.mul_f64(sent as f64 + skipped as f64);
                    tokio::time::sleep_until(due.into()).await;
                    due
                }
                None => Instant::now(),
            };
            let permit = match interval {
                // Open loop: a request that cannot start on time is counted, not queued, so
                // a slow target cannot slow the offered load down.
                Some(_) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => {
                        skipped += 1;
                        continue;
                    }
                },
                None => match permits.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let n = sent;
            sent += 1;
            let (this, shared) = (self.clone(), shared.clone());
            tasks.spawn(async move {
                let status = this.send_one(n).await;
                let micros = due.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
                if let Ok(mut h) = shared.latency.lock() {
                    let _ = h.record(micros.max(1));
                }
                if let Ok(mut s) = shared.statuses.lock() {
                    *s.entry(status).or_default() += 1;
                }
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
        let elapsed = start.elapsed();
        let statuses = shared
            .statuses
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let latency = shared
            .latency
            .lock()
            .map(|h| h.clone())
            .unwrap_or(histogram);
        Ok(Outcome {
            sent,
            statuses,
            latency,
            elapsed,
            skipped,
        })
    }

    /// The path, the token (valid for `ttl_seconds`) and the body of webhook `n`.
    pub fn request(&self, n: u64, ttl_seconds: Option<i64>) -> Option<(String, String, String)> {
        let tenant = &self.tenants[(n as usize) % self.tenants.len()];
        let path = format!("/webhooks/{}", self.event);
        let mut token = Token::from_confluence(&tenant.client_key).for_request("POST", &path);
        if let Some(ttl) = ttl_seconds {
            token = token.ttl(ttl);
        }
        let token = token.hs256(tenant.shared_secret.expose()).ok()?;
        Some((path, token, body_of(n).to_string()))
    }

    async fn send_one(&self, n: u64) -> String {
        let Some((path, token, body)) = self.request(n, None) else {
            return "sign-error".into();
        };
        match self
            .http
            .post(format!("{}{path}", self.target))
            .header("authorization", format!("JWT {token}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(response) => response.status().as_u16().to_string(),
            Err(err) if err.is_timeout() => "timeout".into(),
            Err(_) => "connection-error".into(),
        }
    }
}

fn body_of(n: u64) -> serde_json::Value {
    let now_ms = chrono::Utc::now().timestamp_millis();
    json!({
        "page": {
            "id": n, "idAsString": n.to_string(), "title": format!("Load test page {n}"),
            "spaceKey": "LOAD", "creatorAccountId": "557058:loadgen",
            "lastModifierAccountId": "557058:loadgen", "version": 1,
            "creationDate": now_ms, "modificationDate": now_ms,
        },
        "userAccountId": "557058:loadgen",
        "accountType": "customer",
        "timestamp": now_ms,
    })
}
