//! Installing the load generator's tenants through signed installs.

use anyhow::{Context, bail};
use serde_json::json;
use tributary_common::connect::SharedSecret;
use tributary_devkit::{InstallKey, Token};

/// A tenant the load generator installed, with the secret it chose.
#[derive(Clone)]
pub struct LoadTenant {
    pub client_key: String,
    pub shared_secret: SharedSecret,
}

impl LoadTenant {
    /// For the bare baseline, which checks nothing.
    pub fn placeholder() -> Self {
        LoadTenant {
            client_key: "baseline".into(),
            shared_secret: SharedSecret::new("baseline"),
        }
    }
}

pub struct Installer<'a> {
    pub http: &'a reqwest::Client,
    pub target: &'a str,
    pub app_key: &'a str,
    pub audience: &'a str,
    pub key: &'a InstallKey,
}

impl Installer<'_> {
    pub async fn install(&self, index: usize, run_id: &str) -> anyhow::Result<LoadTenant> {
        let client_key = format!("loadgen-{run_id}-{index}");
        let shared_secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let path = "/lifecycle/installed";
        let token = self
            .key
            .sign(&Token::signed_install(&client_key, self.audience).for_request("POST", path))?;
        let body = json!({
            "key": self.app_key,
            "clientKey": client_key,
            "sharedSecret": shared_secret,
            "baseUrl": format!("https://loadgen-{index}.atlassian.net/wiki"),
            "displayUrl": format!("https://loadgen-{index}.atlassian.net/wiki"),
            "productType": "confluence",
            "description": "Tributary load generator tenant",
            "eventType": "installed",
        });
        let response = self
            .http
            .post(format!("{}{path}", self.target))
            .header("authorization", format!("JWT {token}"))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("installing {client_key}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("install of {client_key} answered {status}: {text}");
        }
        Ok(LoadTenant {
            client_key,
            shared_secret: SharedSecret::new(shared_secret),
        })
    }
}
