//! A tenant's Forge identity (installation, site, API base URL, app system token) beside its
//! Connect one, and the short-lived record of Forge deliveries that lets a retried delivery
//! keep its event id.
//!
//! Identity rules:
//! - a site is known by its `cloudId`, which stays when the app is reinstalled; the
//!   installation id is kept up to date but may change (Atlassian notes it can, sometimes
//!   without a lifecycle event);
//! - a Connect `installed` naming an `installationId` links that installation to the
//!   Connect tenant: its `clientKey` becomes the installation's tenant key;
//! - the tenant key is the Kafka key and the tenant identity of both sources' events: the
//!   Connect `clientKey` when there is one (Connect webhooks carry nothing else, and it is
//!   fixed per site), otherwise the site's ARI, `ari:cloud:confluence::site/<cloudId>`.

use super::tenant_changes::AnnounceInTransaction;
use super::{Database, StoreError};
use crate::connect::SharedSecret;
use crate::crypto::{EncryptedSecret, SecretKeyring};
use crate::forge::SystemToken;
use crate::with_database;

/// The tenant key of a site no Connect tenant is linked to.
pub fn site_tenant_key(cloud_id: &str) -> String {
    format!("ari:cloud:confluence::site/{cloud_id}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForgeStatus {
    Installed,
    Uninstalled,
}

impl ForgeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ForgeStatus::Installed => "installed",
            ForgeStatus::Uninstalled => "uninstalled",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "installed" => Ok(ForgeStatus::Installed),
            "uninstalled" => Ok(ForgeStatus::Uninstalled),
            other => Err(StoreError::CorruptRow(format!("forge status `{other}`"))),
        }
    }
}

/// A Forge installation as the rest of the system sees it: everything but the token.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ForgeInstallation {
    pub installation_id: String,
    pub cloud_id: Option<String>,
    pub tenant_key: String,
    pub api_base_url: Option<String>,
    pub app_id: Option<String>,
    pub environment_type: Option<String>,
    pub status: ForgeStatus,
    /// When the stored system token stops being used (Unix seconds); `None` without one.
    pub token_expires_at: Option<i64>,
}

/// What a verified invocation says about its installation.
#[derive(Debug, Clone)]
pub struct InvocationRecord<'a> {
    pub installation_id: &'a str,
    pub cloud_id: Option<&'a str>,
    pub api_base_url: &'a str,
    pub app_id: &'a str,
    pub environment_type: Option<&'a str>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    cloud_id: Option<String>,
    installation_id: String,
    tenant_key: String,
    api_base_url: Option<String>,
    app_id: Option<String>,
    environment_type: Option<String>,
    status: String,
    token_key_id: Option<String>,
    token_nonce: Option<Vec<u8>>,
    token_ciphertext: Option<Vec<u8>>,
    token_expires_at: Option<i64>,
}

impl Row {
    fn installation(&self) -> Result<ForgeInstallation, StoreError> {
        Ok(ForgeInstallation {
            installation_id: self.installation_id.clone(),
            cloud_id: self.cloud_id.clone(),
            tenant_key: self.tenant_key.clone(),
            api_base_url: self.api_base_url.clone(),
            app_id: self.app_id.clone(),
            environment_type: self.environment_type.clone(),
            status: ForgeStatus::parse(&self.status)?,
            token_expires_at: self.token_ciphertext.as_ref().and(self.token_expires_at),
        })
    }

    fn encrypted_token(&self) -> Option<EncryptedSecret> {
        match (
            &self.token_key_id,
            &self.token_nonce,
            &self.token_ciphertext,
        ) {
            (Some(key_id), Some(nonce), Some(ciphertext)) => Some(EncryptedSecret {
                key_id: key_id.clone(),
                nonce: nonce.clone(),
                ciphertext: ciphertext.clone(),
            }),
            _ => None,
        }
    }
}

const SELECT: &str = "SELECT id, cloud_id, installation_id, tenant_key, api_base_url, app_id, \
    environment_type, status, token_key_id, token_nonce, token_ciphertext, token_expires_at \
    FROM forge_installations";

/// SET clauses that drop the stored token when the row's installation id changes to `$2`
/// (the right-hand sides read the row as it was).
const RETIRE_TOKEN: &str = "\
    token_key_id = CASE WHEN installation_id = $2 THEN token_key_id END, \
    token_nonce = CASE WHEN installation_id = $2 THEN token_nonce END, \
    token_ciphertext = CASE WHEN installation_id = $2 THEN token_ciphertext END, \
    token_expires_at = CASE WHEN installation_id = $2 THEN token_expires_at END";

/// The token is bound to its installation, so a ciphertext copied onto another row does
/// not decrypt.
fn token_binding(installation_id: &str) -> String {
    format!("forge-system-token:{installation_id}")
}

macro_rules! find {
    ($tx:expr, $sql:ident, $column:literal, $value:expr) => {
        sqlx::query_as::<_, Row>(&format!(
            "{SELECT} WHERE {} = $1{}",
            $column, $sql.for_update
        ))
        .bind($value)
        .fetch_optional($tx)
        .await?
    };
}

#[derive(Clone)]
pub struct ForgeStore {
    db: Database,
    keyring: SecretKeyring,
}

impl std::fmt::Debug for ForgeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgeStore")
            .field("backend", &self.db.backend())
            .finish_non_exhaustive()
    }
}

impl ForgeStore {
    pub fn new(db: impl Into<Database>, keyring: SecretKeyring) -> Self {
        ForgeStore {
            db: db.into(),
            keyring,
        }
    }

    /// Records what a verified invocation says: finds the site's installation (by
    /// installation id, else by cloud id, the reinstall case), brings its installation id
    /// and API base URL up to date and stores `token` encrypted; a new site gets its site
    /// ARI as tenant key. Returns the installation.
    pub async fn record_invocation(
        &self,
        invocation: &InvocationRecord<'_>,
        token: Option<(&SystemToken, i64)>,
    ) -> Result<ForgeInstallation, StoreError> {
        let encrypted = token
            .map(|(token, expires)| {
                self.keyring
                    .encrypt(
                        &SharedSecret::new(token.expose()),
                        &token_binding(invocation.installation_id),
                    )
                    .map(|e| (e, expires))
            })
            .transpose()?;
        with_database!(&self.db, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin_write).await?;
            let mut row = find!(&mut *tx, sql, "installation_id", invocation.installation_id);
            if let (Some(found), Some(cloud_id)) = (&row, invocation.cloud_id)
                && found.cloud_id.is_none()
            {
                // A Connect link made before Forge's first delivery meets the site's own
                // row: the linked one wins, keeping the Connect tenant key.
                sqlx::query("DELETE FROM forge_installations WHERE cloud_id = $1 AND id <> $2")
                    .bind(cloud_id)
                    .bind(found.id)
                    .execute(&mut *tx)
                    .await?;
            }
            if row.is_none()
                && let Some(cloud_id) = invocation.cloud_id
            {
                row = find!(&mut *tx, sql, "cloud_id", cloud_id);
            }
            // What processors keep of the installation changes (the token aside, which they
            // keep only while it is valid): they hear of it on the tenant-change feed.
            let announce = match &row {
                None => None,
                Some(found) => (found.installation_id != invocation.installation_id
                    || found.api_base_url.as_deref() != Some(invocation.api_base_url)
                    || found.app_id.as_deref() != Some(invocation.app_id)
                    || (invocation.cloud_id.is_some()
                        && found.cloud_id.as_deref() != invocation.cloud_id)
                    || (invocation.environment_type.is_some()
                        && found.environment_type.as_deref() != invocation.environment_type))
                    .then(|| found.tenant_key.clone()),
            };
            let id = match row {
                Some(found) => {
                    // A token is bound to its installation: a new installation id retires
                    // the old one's token (a delivery carrying a new one stores it below).
                    sqlx::query(&format!(
                        "UPDATE forge_installations SET installation_id = $2, \
                         cloud_id = COALESCE($3, cloud_id), api_base_url = $4, app_id = $5, \
                         environment_type = COALESCE($6, environment_type), {RETIRE_TOKEN}, \
                         updated_at = {} WHERE id = $1",
                        sql.now
                    ))
                    .bind(found.id)
                    .bind(invocation.installation_id)
                    .bind(invocation.cloud_id)
                    .bind(invocation.api_base_url)
                    .bind(invocation.app_id)
                    .bind(invocation.environment_type)
                    .execute(&mut *tx)
                    .await?;
                    found.id
                }
                None => {
                    let tenant_key = invocation
                        .cloud_id
                        .map(site_tenant_key)
                        .unwrap_or_else(|| invocation.installation_id.to_string());
                    AnnounceInTransaction::announce_change(&mut *tx, &tenant_key).await?;
                    sqlx::query_scalar::<_, i64>(
                        "INSERT INTO forge_installations (cloud_id, installation_id, \
                         tenant_key, api_base_url, app_id, environment_type, status) \
                         VALUES ($1, $2, $3, $4, $5, $6, 'installed') RETURNING id",
                    )
                    .bind(invocation.cloud_id)
                    .bind(invocation.installation_id)
                    .bind(&tenant_key)
                    .bind(invocation.api_base_url)
                    .bind(invocation.app_id)
                    .bind(invocation.environment_type)
                    .fetch_one(&mut *tx)
                    .await?
                }
            };
            if let Some((token, expires)) = &encrypted {
                sqlx::query(
                    "UPDATE forge_installations SET token_key_id = $2, token_nonce = $3, \
                     token_ciphertext = $4, token_expires_at = $5 WHERE id = $1",
                )
                .bind(id)
                .bind(&token.key_id)
                .bind(&token.nonce)
                .bind(&token.ciphertext)
                .bind(expires)
                .execute(&mut *tx)
                .await?;
            }
            let row = find!(&mut *tx, sql, "id", id).ok_or_else(|| {
                StoreError::CorruptRow("installation vanished inside its own transaction".into())
            })?;
            if let Some(tenant_key) = announce {
                AnnounceInTransaction::announce_change(&mut *tx, &tenant_key).await?;
            }
            tx.commit().await?;
            row.installation()
        })
    }

    /// Links a Forge installation to the Connect tenant `client_key` (a Connect `installed`
    /// that names it): from now on the installation's events travel under the clientKey.
    pub async fn link_connect(
        &self,
        installation_id: &str,
        client_key: &str,
    ) -> Result<ForgeInstallation, StoreError> {
        with_database!(&self.db, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin_write).await?;
            let by_installation = find!(&mut *tx, sql, "installation_id", installation_id);
            if let Some(row) = &by_installation
                && row.tenant_key != client_key
            {
                // The site's events leave the site ARI for the clientKey.
                AnnounceInTransaction::announce_change(&mut *tx, &row.tenant_key).await?;
            }
            AnnounceInTransaction::announce_change(&mut *tx, client_key).await?;
            let id = match by_installation {
                Some(row) => {
                    sqlx::query(&format!(
                        "UPDATE forge_installations SET tenant_key = $2, updated_at = {} WHERE id = $1",
                        sql.now
                    ))
                    .bind(row.id)
                    .bind(client_key)
                    .execute(&mut *tx)
                    .await?;
                    row.id
                }
                None => {
                    // A Connect reinstall may name a new installation of a site already
                    // linked: the site's row follows it.
                    let linked = sqlx::query_scalar::<_, i64>(&format!(
                        "SELECT id FROM forge_installations WHERE tenant_key = $1 \
                         ORDER BY id DESC LIMIT 1{}",
                        sql.for_update
                    ))
                    .bind(client_key)
                    .fetch_optional(&mut *tx)
                    .await?;
                    match linked {
                        Some(id) => {
                            sqlx::query(&format!(
                                "UPDATE forge_installations SET installation_id = $2, \
                                 {RETIRE_TOKEN}, updated_at = {} WHERE id = $1",
                                sql.now
                            ))
                            .bind(id)
                            .bind(installation_id)
                            .execute(&mut *tx)
                            .await?;
                            id
                        }
                        None => {
                            sqlx::query_scalar::<_, i64>(
                                "INSERT INTO forge_installations (installation_id, tenant_key, \
                                 status) VALUES ($1, $2, 'installed') RETURNING id",
                            )
                            .bind(installation_id)
                            .bind(client_key)
                            .fetch_one(&mut *tx)
                            .await?
                        }
                    }
                }
            };
            let row = find!(&mut *tx, sql, "id", id).ok_or_else(|| {
                StoreError::CorruptRow("installation vanished inside its own transaction".into())
            })?;
            tx.commit().await?;
            row.installation()
        })
    }

    /// Sets the status after a Forge lifecycle event; `None` for an unknown installation.
    pub async fn set_status(
        &self,
        installation_id: &str,
        status: ForgeStatus,
    ) -> Result<Option<ForgeInstallation>, StoreError> {
        with_database!(&self.db, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin_write).await?;
            sqlx::query(&format!(
                "UPDATE forge_installations SET status = $2, updated_at = {} \
                 WHERE installation_id = $1",
                sql.now
            ))
            .bind(installation_id)
            .bind(status.as_str())
            .execute(&mut *tx)
            .await?;
            let row = find!(&mut *tx, sql, "installation_id", installation_id);
            if let Some(row) = &row {
                AnnounceInTransaction::announce_change(&mut *tx, &row.tenant_key).await?;
            }
            tx.commit().await?;
            row.map(|r| r.installation()).transpose()
        })
    }

    /// The installation whose events travel under `tenant_key`, with its decrypted system
    /// token when one is stored (expired or not: the caller decides).
    pub async fn for_tenant(
        &self,
        tenant_key: &str,
    ) -> Result<Option<(ForgeInstallation, Option<SystemToken>)>, StoreError> {
        let row = with_database!(&self.db, |pool, _sql| {
            sqlx::query_as::<_, Row>(&format!(
                "{SELECT} WHERE tenant_key = $1 ORDER BY updated_at DESC, id DESC LIMIT 1"
            ))
            .bind(tenant_key)
            .fetch_optional(pool)
            .await?
        });
        let Some(row) = row else {
            return Ok(None);
        };
        let token = row
            .encrypted_token()
            .map(|e| {
                self.keyring
                    .decrypt(&e, &token_binding(&row.installation_id))
                    .map(|t| SystemToken::new(t.expose()))
            })
            .transpose()?;
        Ok(Some((row.installation()?, token)))
    }

    pub async fn by_installation(
        &self,
        installation_id: &str,
    ) -> Result<Option<ForgeInstallation>, StoreError> {
        let row = with_database!(&self.db, |pool, _sql| {
            sqlx::query_as::<_, Row>(&format!("{SELECT} WHERE installation_id = $1"))
                .bind(installation_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(|r| r.installation()).transpose()
    }

    /// The event id of a delivery. A first delivery (`retried` false) always gets
    /// `fresh_id`: two distinct events may have identical bodies. A retried one gets the id
    /// of the latest delivery of the same installation with the same content within
    /// `window_ms`, or `fresh_id` when there is none. Each fresh id is recorded (and
    /// records older than the window pruned) so that later retries find it.
    pub async fn delivery_id(
        &self,
        installation_id: &str,
        content_hash: &str,
        retried: bool,
        fresh_id: &str,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<String, StoreError> {
        let since = now_ms.saturating_sub(window_ms);
        with_database!(&self.db, |pool, _sql| {
            if retried {
                let earlier: Option<String> = sqlx::query_scalar(
                    "SELECT event_id FROM forge_deliveries WHERE installation_id = $1 \
                     AND content_hash = $2 AND received_at_ms >= $3 ORDER BY id DESC LIMIT 1",
                )
                .bind(installation_id)
                .bind(content_hash)
                .bind(since)
                .fetch_optional(pool)
                .await?;
                if let Some(id) = earlier {
                    return Ok(id);
                }
            }
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM forge_deliveries WHERE received_at_ms < $1")
                .bind(since)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO forge_deliveries (installation_id, content_hash, event_id, \
                 received_at_ms) VALUES ($1, $2, $3, $4)",
            )
            .bind(installation_id)
            .bind(content_hash)
            .bind(fresh_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(fresh_id.to_string())
        })
    }
}
