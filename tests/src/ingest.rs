//! Speaking to a running ingest the way Confluence does: signed installs, JWT-signed
//! webhooks, and a careful sender that retries 503s.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};
use tributary_devkit::{INSTALL_KEY_1, Token};

use crate::child::Service;
use crate::world::{APP_BASE_URL, APP_KEY, KID};

/// A running `tributary-ingest` child and a client for it.
pub struct Ingest {
    pub service: Service,
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub metrics_url: String,
    pub http: reqwest::Client,
}

/// An answer, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub event_id: Option<String>,
    pub retry_after: Option<u64>,
    pub body: String,
}

impl Answer {
    /// The `error` code of a refusal.
    pub fn code(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

impl Ingest {
    /// Waits until the child answers `/healthz`.
    pub async fn ready(mut service: Service, listen: &str, metrics: &str) -> Ingest {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        let url = format!("http://{listen}");
        for _ in 0..300 {
            if let Ok(answer) = http.get(format!("{url}/healthz")).send().await
                && answer.status().is_success()
            {
                return Ingest {
                    service,
                    addr: listen.parse().expect("listen address"),
                    url,
                    metrics_url: format!("http://{metrics}"),
                    http,
                };
            }
            assert!(
                service.running(),
                "the ingest exited at start:\n{}",
                service.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the ingest never served:\n{}", service.log_tail(40));
    }

    pub async fn send(&self, request: &Raw) -> Result<Answer, reqwest::Error> {
        let mut builder = self.http.request(
            request.method.clone(),
            format!("{}{}", self.url, request.target),
        );
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let response = builder.body(request.body.clone()).send().await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let event_id = header("tributary-event-id");
        let retry_after = header("retry-after").and_then(|v| v.parse().ok());
        let status = response.status().as_u16();
        let body = response.text().await?;
        Ok(Answer {
            status,
            event_id,
            retry_after,
            body,
        })
    }

    pub async fn install(&self, tenant: &SiteTenant) -> Answer {
        self.send(&tenant.install_request())
            .await
            .expect("the ingest answers an install")
    }

    pub async fn metrics(&self) -> String {
        match self
            .http
            .get(format!("{}/metrics", self.metrics_url))
            .send()
            .await
        {
            Ok(answer) => answer.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Sends webhook `sequence` of `tenant` until it is acknowledged, waiting out 503s (at
    /// least their Retry-After) and connection failures, for at most `attempts` tries.
    pub async fn deliver(&self, tenant: &SiteTenant, sequence: u64, attempts: u32) -> Delivery {
        let mut delivery = Delivery {
            sequence,
            client_key: tenant.client_key.clone(),
            event_id: None,
            attempts: 0,
            last_status: 0,
        };
        while delivery.attempts < attempts {
            delivery.attempts += 1;
            let request = tenant.webhook_request("page_updated", &tenant.page_event(sequence));
            let wait = match self.send(&request).await {
                Ok(answer) if answer.status == 204 => {
                    delivery.last_status = 204;
                    delivery.event_id = answer.event_id;
                    return delivery;
                }
                Ok(answer) if answer.status == 503 => {
                    delivery.last_status = 503;
                    Duration::from_secs(answer.retry_after.unwrap_or(1))
                }
                Ok(answer) => {
                    // Anything else is final: a careful sender does not repeat a refusal.
                    delivery.last_status = answer.status;
                    return delivery;
                }
                Err(_) => {
                    delivery.last_status = 0;
                    Duration::from_millis(500)
                }
            };
            tokio::time::sleep(wait).await;
        }
        delivery
    }
}

/// One webhook as a sender saw it end.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub sequence: u64,
    pub client_key: String,
    /// The `Tributary-Event-Id` of the 204, when it was acknowledged.
    pub event_id: Option<String>,
    pub attempts: u32,
    pub last_status: u16,
}

/// A request as the test means to send it.
#[derive(Clone, Debug)]
pub struct Raw {
    pub method: reqwest::Method,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn post(target: &str, body: Vec<u8>) -> Raw {
        Raw {
            method: reqwest::Method::POST,
            target: target.to_string(),
            headers: vec![(CONTENT_TYPE.to_string(), "application/json".to_string())],
            body,
        }
    }

    pub fn token(self, token: &str) -> Raw {
        self.header(AUTHORIZATION.as_str(), &format!("JWT {token}"))
    }

    pub fn header(mut self, name: &str, value: &str) -> Raw {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn without_header(mut self, name: &str) -> Raw {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }
}

/// A Confluence site with the app installed, living on the simulated Confluence.
#[derive(Clone, Debug)]
pub struct SiteTenant {
    pub client_key: String,
    pub secret: String,
    pub base_url: String,
    /// The page its webhooks are about (the simulator knows it).
    pub page_id: String,
}

impl SiteTenant {
    pub fn new(name: &str, base_url: &str) -> SiteTenant {
        SiteTenant {
            client_key: format!("{name}-{}", uuid::Uuid::new_v4().simple()),
            secret: format!("secret-{}-{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4()),
            base_url: base_url.to_string(),
            page_id: format!("{}", 100_000 + rand::random::<u32>() % 800_000),
        }
    }

    /// An HS256 token from this site for a POST to `target`, valid three minutes.
    pub fn token(&self, target: &str) -> String {
        Token::from_confluence(&self.client_key)
            .for_request("POST", target)
            .hs256(&self.secret)
            .expect("sign")
    }

    pub fn lifecycle_body(&self, event_type: &str) -> Value {
        let mut body = json!({
            "key": APP_KEY,
            "clientKey": self.client_key,
            "baseUrl": self.base_url,
            "displayUrl": self.base_url,
            "productType": "confluence",
            "description": "Confluence on the simulator",
            "eventType": event_type,
            "serverVersion": "6452",
            "pluginsVersion": "1001.0.0",
        });
        if event_type == "installed" {
            body["sharedSecret"] = json!(self.secret);
        }
        body
    }

    /// A signed install (RS256 under the world's key id).
    pub fn install_request(&self) -> Raw {
        let target = "/lifecycle/installed";
        let token = install_token(&self.client_key, target, APP_BASE_URL, KID);
        Raw::post(
            target,
            self.lifecycle_body("installed").to_string().into_bytes(),
        )
        .token(&token)
    }

    /// A signed uninstall (RS256 under the world's key id).
    pub fn uninstall_request(&self) -> Raw {
        let target = "/lifecycle/uninstalled";
        let token = install_token(&self.client_key, target, APP_BASE_URL, KID);
        Raw::post(
            target,
            self.lifecycle_body("uninstalled").to_string().into_bytes(),
        )
        .token(&token)
    }

    /// A webhook of `event` with `body`, signed for its own path.
    pub fn webhook_request(&self, event: &str, body: &[u8]) -> Raw {
        let target = format!("/webhooks/{event}");
        Raw::post(&target, body.to_vec()).token(&self.token(&target))
    }

    /// A `page_updated` body about this site's page, carrying `sequence`.
    pub fn page_event(&self, sequence: u64) -> Vec<u8> {
        json!({
            "page": {
                "id": self.page_id.parse::<u64>().unwrap_or_default(),
                "idAsString": self.page_id,
                "spaceKey": "E2E",
                "title": "Pipeline",
                "version": sequence,
            },
            "userAccountId": "557058:e2e",
            "updateTrigger": "edit_page",
            "timestamp": 1_700_000_000_000u64 + sequence,
            "sequence": sequence,
        })
        .to_string()
        .into_bytes()
    }
}

/// An RS256 install token as Atlassian signs them, for `target` on the app.
pub fn install_token(client_key: &str, target: &str, audience: &str, kid: &str) -> String {
    Token::signed_install(client_key, audience)
        .for_request("POST", target)
        .rs256(kid, INSTALL_KEY_1)
        .expect("sign")
}
