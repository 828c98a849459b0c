//! `tributary tenants`: the tenants with their status, the Confluence quota pauses holding
//! their calls back and the events parked until a retry is due.

use std::collections::HashMap;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use tributary_common::Config;
use tributary_common::store::{self, ParkedStore, PauseScope, PauseStore, TenantStore};

fn time_of(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

pub async fn list(config: &Config, json: bool) -> anyhow::Result<()> {
    let db = store::connect(config)
        .await
        .context("connecting to the database")?;
    let tenants = TenantStore::new(db.clone(), config.secret_keyring()?.clone());
    let list = tenants.list().await?;
    let pauses = PauseStore::new(db.clone()).in_force(now_ms()).await?;
    let parked: HashMap<String, (u64, i64)> = ParkedStore::new(db)
        .by_tenant()
        .await?
        .into_iter()
        .map(|(client_key, events, due)| (client_key, (events, due)))
        .collect();
    let app_pause = pauses.iter().find(|p| p.scope == PauseScope::App);
    let tenant_pause = |client_key: &str| {
        pauses
            .iter()
            .find(|p| p.scope == PauseScope::Tenant && p.client_key == client_key)
    };
    if json {
        for tenant in &list {
            let mut line = serde_json::to_value(tenant)?;
            if let Some(object) = line.as_object_mut() {
                let pause = tenant_pause(&tenant.client_key).or(app_pause);
                object.insert(
                    "confluence_paused_until".into(),
                    pause
                        .and_then(|p| DateTime::<Utc>::from_timestamp_millis(p.until_ms))
                        .map(|t| t.to_rfc3339())
                        .into(),
                );
                object.insert(
                    "confluence_pause".into(),
                    pause
                        .map(|p| format!("{}: {}", p.scope.as_str(), p.reason))
                        .into(),
                );
                object.insert(
                    "parked_events".into(),
                    parked.get(&tenant.client_key).map_or(0, |(n, _)| *n).into(),
                );
            }
            println!("{line}");
        }
        return Ok(());
    }
    if let Some(pause) = app_pause {
        println!(
            "every Confluence call of the app is paused until {} UTC ({})",
            time_of(pause.until_ms),
            pause.reason
        );
    }
    println!(
        "{:<40} {:<12} {:<20} {:<20} {:>7} BASE URL",
        "CLIENT KEY", "STATUS", "UPDATED", "PAUSED UNTIL", "PARKED"
    );
    for t in &list {
        let paused = tenant_pause(&t.client_key)
            .or(app_pause)
            .map_or_else(|| "-".into(), |p| time_of(p.until_ms));
        let parked = parked.get(&t.client_key).map_or(0, |(n, _)| *n);
        println!(
            "{:<40} {:<12} {:<20} {:<20} {:>7} {}",
            t.client_key,
            t.status,
            t.updated_at.format("%Y-%m-%d %H:%M:%S"),
            paused,
            parked,
            t.base_url
        );
    }
    println!("{} tenant(s)", list.len());
    Ok(())
}

pub async fn reencrypt(config: &Config) -> anyhow::Result<()> {
    let db = store::connect(config)
        .await
        .context("connecting to the database")?;
    let tenants = TenantStore::new(db, config.secret_keyring()?.clone());
    let changed = tenants.reencrypt_secrets().await?;
    println!("re-encrypted {changed} secret(s) under the current key");
    Ok(())
}
