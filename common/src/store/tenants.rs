//! Tenants and their lifecycle, with shared secrets encrypted at rest.

use chrono::{DateTime, Utc};

use super::{Database, StoreError};
use crate::connect::{LifecycleEventType, LifecyclePayload, SharedSecret};
use crate::crypto::{EncryptedSecret, SecretKeyring};
use crate::with_database;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Installed,
    Enabled,
    Disabled,
    Uninstalled,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Installed => "installed",
            TenantStatus::Enabled => "enabled",
            TenantStatus::Disabled => "disabled",
            TenantStatus::Uninstalled => "uninstalled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Installed,
            Self::Enabled,
            Self::Disabled,
            Self::Uninstalled,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }

    pub fn is_active(self) -> bool {
        self != TenantStatus::Uninstalled
    }
}

impl std::fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status after `event`, given the status before it.
///
/// Confluence may send `disabled` and `uninstalled` in either order, a few ms apart, so
/// `uninstalled` is sticky: only a new `installed` leaves it. An `installed` for an enabled
/// or disabled tenant is an upgrade or a secret rotation and keeps that status.
pub fn next_status(current: Option<TenantStatus>, event: LifecycleEventType) -> TenantStatus {
    use LifecycleEventType as E;
    use TenantStatus as S;
    match (current, event) {
        (Some(S::Enabled), E::Installed) => S::Enabled,
        (Some(S::Disabled), E::Installed) => S::Disabled,
        (_, E::Installed) => S::Installed,
        (_, E::Uninstalled) => S::Uninstalled,
        (Some(S::Uninstalled), _) => S::Uninstalled,
        (_, E::Enabled) => S::Enabled,
        (_, E::Disabled) => S::Disabled,
    }
}

/// When the callback behind a lifecycle transition arrived, and its event id to order two
/// callbacks of the same millisecond. The ingest applies each callback as it arrives and
/// processors apply the same event again when they consume it, possibly much later and,
/// with lifecycle events split over topics, in another order; a transition whose stamp is
/// older than the one the tenant's status came from is audited but changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LifecycleStamp {
    /// Milliseconds since the Unix epoch (the event's `ce_time`).
    pub at_ms: i64,
    pub event_id: String,
}

impl LifecycleStamp {
    pub fn new(at: DateTime<Utc>, event_id: &str) -> Self {
        LifecycleStamp {
            at_ms: at.timestamp_millis(),
            event_id: event_id.to_string(),
        }
    }
}

/// Whether an install may overwrite a tenant that is already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallMode {
    /// A verified install: a new tenant, or a reinstall (secret rotation, site rename).
    Upsert,
    /// An unverified (legacy) first install: only when no tenant has this clientKey, decided
    /// inside the transaction that inserts it, so concurrent ones cannot all win.
    FirstOnly,
}

/// A tenant as the rest of the system sees it: everything but the secret.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Tenant {
    pub client_key: String,
    pub app_key: String,
    pub base_url: String,
    pub display_url: Option<String>,
    pub display_url_servicedesk_help_center: Option<String>,
    pub product_type: Option<String>,
    pub description: Option<String>,
    pub server_version: Option<String>,
    pub plugins_version: Option<String>,
    pub oauth_client_id: Option<String>,
    pub installation_id: Option<String>,
    pub entitlement_id: Option<String>,
    pub entitlement_number: Option<String>,
    pub service_entitlement_number: Option<String>,
    pub status: TenantStatus,
    pub installed_at: DateTime<Utc>,
    pub enabled_at: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub uninstalled_at: Option<DateTime<Utc>>,
    pub status_changed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    client_key: String,
    app_key: String,
    base_url: String,
    display_url: Option<String>,
    display_url_servicedesk_help_center: Option<String>,
    product_type: Option<String>,
    description: Option<String>,
    server_version: Option<String>,
    plugins_version: Option<String>,
    oauth_client_id: Option<String>,
    installation_id: Option<String>,
    entitlement_id: Option<String>,
    entitlement_number: Option<String>,
    service_entitlement_number: Option<String>,
    secret_key_id: String,
    secret_nonce: Vec<u8>,
    secret_ciphertext: Vec<u8>,
    status: String,
    installed_at: DateTime<Utc>,
    enabled_at: Option<DateTime<Utc>>,
    disabled_at: Option<DateTime<Utc>>,
    uninstalled_at: Option<DateTime<Utc>>,
    status_changed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TenantRow {
    fn into_parts(self) -> Result<(Tenant, EncryptedSecret), StoreError> {
        let status = TenantStatus::parse(&self.status)
            .ok_or_else(|| StoreError::CorruptRow(format!("status `{}`", self.status)))?;
        let secret = EncryptedSecret {
            key_id: self.secret_key_id,
            nonce: self.secret_nonce,
            ciphertext: self.secret_ciphertext,
        };
        let tenant = Tenant {
            client_key: self.client_key,
            app_key: self.app_key,
            base_url: self.base_url,
            display_url: self.display_url,
            display_url_servicedesk_help_center: self.display_url_servicedesk_help_center,
            product_type: self.product_type,
            description: self.description,
            server_version: self.server_version,
            plugins_version: self.plugins_version,
            oauth_client_id: self.oauth_client_id,
            installation_id: self.installation_id,
            entitlement_id: self.entitlement_id,
            entitlement_number: self.entitlement_number,
            service_entitlement_number: self.service_entitlement_number,
            status,
            installed_at: self.installed_at,
            enabled_at: self.enabled_at,
            disabled_at: self.disabled_at,
            uninstalled_at: self.uninstalled_at,
            status_changed_at: self.status_changed_at,
            updated_at: self.updated_at,
        };
        Ok((tenant, secret))
    }
}

/// One audited lifecycle callback.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct LifecycleRecord {
    pub client_key: String,
    pub event_type: String,
    pub event_id: Option<String>,
    pub base_url: Option<String>,
    pub status_after: Option<String>,
    pub received_at: DateTime<Utc>,
}

const SELECT_TENANT: &str = "SELECT client_key, app_key, base_url, display_url, \
    display_url_servicedesk_help_center, product_type, description, server_version, \
    plugins_version, oauth_client_id, installation_id, entitlement_id, entitlement_number, \
    service_entitlement_number, secret_key_id, secret_nonce, secret_ciphertext, status, \
    installed_at, enabled_at, disabled_at, uninstalled_at, status_changed_at, updated_at \
    FROM tenants";

/// The status stored in a row, or why it cannot be read.
fn parse_status(s: &str) -> Result<TenantStatus, StoreError> {
    TenantStatus::parse(s).ok_or_else(|| StoreError::CorruptRow(format!("status `{s}`")))
}

// Steps shared by the transactions below. They are macros rather than functions so that
// one text serves the transaction type of either backend.

/// The tenant's current status, locking its row until the transaction ends.
macro_rules! lock_status {
    ($tx:ident, $sql:ident, $client_key:expr) => {{
        let status: Option<String> = sqlx::query_scalar(&format!(
            "SELECT status FROM tenants WHERE client_key = $1{}",
            $sql.for_update
        ))
        .bind($client_key)
        .fetch_optional(&mut *$tx)
        .await?;
        status.as_deref().map(parse_status).transpose()?
    }};
}

/// The tenant's audited callbacks with their stamps, in arrival order.
macro_rules! stamped_history {
    ($tx:ident, $client_key:expr) => {{
        let rows: Vec<(String, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT event_type, event_id, event_ms FROM tenant_lifecycle_events \
             WHERE client_key = $1 ORDER BY id",
        )
        .bind($client_key)
        .fetch_all(&mut *$tx)
        .await?;
        rows
    }};
}

/// The tenant with its encrypted secret, if it exists.
macro_rules! fetch {
    ($tx:ident, $client_key:expr) => {
        sqlx::query_as::<_, TenantRow>(&format!("{SELECT_TENANT} WHERE client_key = $1"))
            .bind($client_key)
            .fetch_optional(&mut *$tx)
            .await?
            .map(TenantRow::into_parts)
            .transpose()?
    };
}

/// Appends a callback, with its stamp, to the tenant's audit trail.
macro_rules! audit {
    ($tx:ident, $client_key:expr, $event:expr, $stamp:expr, $base_url:expr, $status_after:expr) => {
        sqlx::query(
            "INSERT INTO tenant_lifecycle_events \
             (client_key, event_type, event_id, base_url, status_after, event_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind($client_key)
        .bind($event.as_str())
        .bind(&$stamp.event_id)
        .bind($base_url)
        .bind($status_after.map(TenantStatus::as_str))
        .bind($stamp.at_ms)
        .execute(&mut *$tx)
        .await?
    };
}

/// The status a tenant's callbacks lead to: each distinct callback (by event id) once, in
/// stamp order (unstamped ones from before stamps first, as they arrived), `event` at
/// `stamp` among them. The same set gives the same status whatever order it arrived in, so
/// the ingest applying each callback at once and a processor applying the same events later,
/// late or re-ordered, agree at every step and never move the tenant back. Also says whether
/// `event` is the newest of them.
fn folded_status(
    history: Vec<(String, Option<String>, Option<i64>)>,
    event: LifecycleEventType,
    stamp: &LifecycleStamp,
) -> Result<(Option<TenantStatus>, bool), StoreError> {
    let mut events: Vec<(Option<i64>, String, usize, LifecycleEventType)> = Vec::new();
    for (position, (event_type, event_id, event_ms)) in history.into_iter().enumerate() {
        let kind = LifecycleEventType::parse(&event_type)
            .ok_or_else(|| StoreError::CorruptRow(format!("event type `{event_type}`")))?;
        let id = event_id.unwrap_or_default();
        // The same event applied again (by the ingest, then a processor) has the same id,
        // type and stamp.
        let seen = |e: &(Option<i64>, String, usize, LifecycleEventType)| {
            e.0 == event_ms && e.1 == id && e.3 == kind
        };
        if event_ms.is_some() && events.iter().any(seen) {
            continue;
        }
        events.push((event_ms, id, position, kind));
    }
    let position = events.len();
    let this = |e: &(Option<i64>, String, usize, LifecycleEventType)| {
        e.0 == Some(stamp.at_ms) && e.1 == stamp.event_id && e.3 == event
    };
    if !events.iter().any(this) {
        events.push((Some(stamp.at_ms), stamp.event_id.clone(), position, event));
    }
    events.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| {
                if a.0.is_some() {
                    a.1.cmp(&b.1)
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .then_with(|| a.2.cmp(&b.2))
    });
    let newest = events.last().is_some_and(this);
    let status = events
        .iter()
        .fold(None, |status, e| Some(next_status(status, e.3)));
    Ok((status, newest))
}

#[derive(Clone)]
pub struct TenantStore {
    db: Database,
    keyring: SecretKeyring,
}

impl std::fmt::Debug for TenantStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantStore")
            .field("backend", &self.db.backend())
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

impl TenantStore {
    /// A store on `db`: a [`Database`], or a PostgreSQL or SQLite pool.
    pub fn new(db: impl Into<Database>, keyring: SecretKeyring) -> Self {
        TenantStore {
            db: db.into(),
            keyring,
        }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Upserts the tenant from an `installed` body, with its secret encrypted, and audits the
    /// callback, in one transaction. A re-delivered callback leaves the same row.
    pub async fn record_install(
        &self,
        install: &LifecyclePayload,
        event_id: &str,
    ) -> Result<Tenant, StoreError> {
        self.record_install_at(
            install,
            &LifecycleStamp::new(Utc::now(), event_id),
            InstallMode::Upsert,
        )
        .await
    }

    /// [`TenantStore::record_install`] stamped with the callback's arrival; with
    /// [`InstallMode::FirstOnly`], [`StoreError::AlreadyInstalled`] when the tenant exists.
    pub async fn record_install_at(
        &self,
        install: &LifecyclePayload,
        stamp: &LifecycleStamp,
        mode: InstallMode,
    ) -> Result<Tenant, StoreError> {
        let secret = install
            .shared_secret
            .as_deref()
            .ok_or(StoreError::MissingSecret)?;
        let encrypted = self
            .keyring
            .encrypt(&SharedSecret::new(secret), &install.client_key)?;
        let upsert = |now: &str, conflict: &str| {
            format!(
                "INSERT INTO tenants (client_key, app_key, base_url, display_url, \
                 display_url_servicedesk_help_center, product_type, description, server_version, \
                 plugins_version, oauth_client_id, installation_id, entitlement_id, entitlement_number, \
                 service_entitlement_number, secret_key_id, secret_nonce, secret_ciphertext, status, \
                 installed_at, status_changed_at) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18, \
                 {now}, {now}) {conflict}"
            )
        };
        let conflict = |now: &str| match mode {
            InstallMode::FirstOnly => "ON CONFLICT (client_key) DO NOTHING".to_string(),
            InstallMode::Upsert => format!(
                "ON CONFLICT (client_key) DO UPDATE SET app_key = EXCLUDED.app_key, \
                 base_url = EXCLUDED.base_url, display_url = EXCLUDED.display_url, \
                 display_url_servicedesk_help_center = EXCLUDED.display_url_servicedesk_help_center, \
                 product_type = EXCLUDED.product_type, description = EXCLUDED.description, \
                 server_version = EXCLUDED.server_version, plugins_version = EXCLUDED.plugins_version, \
                 oauth_client_id = EXCLUDED.oauth_client_id, installation_id = EXCLUDED.installation_id, \
                 entitlement_id = EXCLUDED.entitlement_id, entitlement_number = EXCLUDED.entitlement_number, \
                 service_entitlement_number = EXCLUDED.service_entitlement_number, \
                 secret_key_id = EXCLUDED.secret_key_id, secret_nonce = EXCLUDED.secret_nonce, \
                 secret_ciphertext = EXCLUDED.secret_ciphertext, status = EXCLUDED.status, \
                 installed_at = {now}, \
                 status_changed_at = CASE WHEN tenants.status = EXCLUDED.status \
                     THEN tenants.status_changed_at ELSE {now} END, \
                 updated_at = {now}"
            ),
        };
        with_database!(&self.db, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin_write).await?;
            let current = lock_status!(tx, sql, &install.client_key);
            if mode == InstallMode::FirstOnly && current.is_some() {
                return Err(StoreError::AlreadyInstalled);
            }
            // The row (secret, base URL) is always the latest install's: it arrived just now,
            // carrying the secret every later request is signed with. The status is what all
            // of the tenant's callbacks lead to.
            let history = stamped_history!(tx, &install.client_key);
            let (status, _) = folded_status(history, LifecycleEventType::Installed, stamp)?;
            let status = status.unwrap_or(TenantStatus::Installed);
            let inserted = sqlx::query(&upsert(sql.now, &conflict(sql.now)))
                .bind(&install.client_key)
                .bind(&install.key)
                .bind(install.base_url.trim_end_matches('/'))
                .bind(&install.display_url)
                .bind(&install.display_url_servicedesk_help_center)
                .bind(&install.product_type)
                .bind(&install.description)
                .bind(&install.server_version)
                .bind(&install.plugins_version)
                .bind(&install.oauth_client_id)
                .bind(&install.installation_id)
                .bind(&install.entitlement_id)
                .bind(&install.entitlement_number)
                .bind(&install.service_entitlement_number)
                .bind(&encrypted.key_id)
                .bind(&encrypted.nonce)
                .bind(&encrypted.ciphertext)
                .bind(status.as_str())
                .execute(&mut *tx)
                .await?;
            if inserted.rows_affected() == 0 {
                // A concurrent first install committed between the lock and the insert.
                return Err(StoreError::AlreadyInstalled);
            }
            audit!(
                tx,
                &install.client_key,
                LifecycleEventType::Installed,
                stamp,
                Some(&install.base_url),
                Some(status)
            );
            let tenant = fetch!(tx, &install.client_key).ok_or_else(|| {
                StoreError::CorruptRow("tenant vanished inside its own transaction".into())
            })?;
            tx.commit().await?;
            Ok(tenant.0)
        })
    }

    /// Applies `uninstalled`, `enabled` or `disabled` (or a repeated `installed`, which only
    /// re-derives the status) and audits it. `None` when the tenant is unknown; the
    /// callback is audited all the same.
    pub async fn apply_lifecycle(
        &self,
        client_key: &str,
        event: LifecycleEventType,
        event_id: &str,
    ) -> Result<Option<Tenant>, StoreError> {
        self.apply_lifecycle_at(
            client_key,
            event,
            &LifecycleStamp::new(Utc::now(), event_id),
        )
        .await
    }

    /// [`TenantStore::apply_lifecycle`] for a callback stamped `stamp`: a callback older than
    /// the one the tenant's status came from is audited and changes nothing, so applying
    /// events again, late or out of order never moves a tenant back.
    pub async fn apply_lifecycle_at(
        &self,
        client_key: &str,
        event: LifecycleEventType,
        stamp: &LifecycleStamp,
    ) -> Result<Option<Tenant>, StoreError> {
        let column = match event {
            LifecycleEventType::Installed => "installed_at",
            LifecycleEventType::Enabled => "enabled_at",
            LifecycleEventType::Disabled => "disabled_at",
            LifecycleEventType::Uninstalled => "uninstalled_at",
        };
        with_database!(&self.db, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin_write).await?;
            let current = lock_status!(tx, sql, client_key);
            let status = match current {
                None => None,
                Some(current) => {
                    let history = stamped_history!(tx, client_key);
                    let (folded, newest) = folded_status(history, event, stamp)?;
                    let next = folded.unwrap_or(current);
                    if !newest {
                        tracing::info!(
                            client_key,
                            event = event.as_str(),
                            status = next.as_str(),
                            "lifecycle event older than the tenant's latest; applied in its place"
                        );
                    }
                    // The event's own time column moves only for the newest event.
                    let stamp_column = if newest {
                        format!("{column} = {}, ", sql.now)
                    } else {
                        String::new()
                    };
                    let update = format!(
                        "UPDATE tenants SET status = $2, {stamp_column}\
                         status_changed_at = CASE WHEN status = $2 THEN status_changed_at ELSE {now} END, \
                         updated_at = {now} WHERE client_key = $1",
                        now = sql.now
                    );
                    sqlx::query(&update)
                        .bind(client_key)
                        .bind(next.as_str())
                        .execute(&mut *tx)
                        .await?;
                    Some(next)
                }
            };
            audit!(tx, client_key, event, stamp, None::<&str>, status);
            let tenant = fetch!(tx, client_key).map(|(t, _)| t);
            tx.commit().await?;
            Ok(tenant)
        })
    }

    pub async fn get(&self, client_key: &str) -> Result<Option<Tenant>, StoreError> {
        Ok(self
            .get_with_secret(client_key)
            .await?
            .map(|(tenant, _)| tenant))
    }

    /// The tenant and its decrypted shared secret.
    pub async fn get_with_secret(
        &self,
        client_key: &str,
    ) -> Result<Option<(Tenant, SharedSecret)>, StoreError> {
        let row = with_database!(&self.db, |pool, _sql| {
            sqlx::query_as::<_, TenantRow>(&format!("{SELECT_TENANT} WHERE client_key = $1"))
                .bind(client_key)
                .fetch_optional(pool)
                .await?
        });
        match row {
            None => Ok(None),
            Some(row) => {
                let (tenant, encrypted) = row.into_parts()?;
                let secret = self.keyring.decrypt(&encrypted, &tenant.client_key)?;
                Ok(Some((tenant, secret)))
            }
        }
    }

    /// Every tenant, newest first.
    pub async fn list(&self) -> Result<Vec<Tenant>, StoreError> {
        let query = format!("{SELECT_TENANT} ORDER BY updated_at DESC, client_key");
        let rows = with_database!(&self.db, |pool, _sql| {
            sqlx::query_as::<_, TenantRow>(&query)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|row| row.into_parts().map(|(tenant, _)| tenant))
            .collect()
    }

    /// The audited lifecycle callbacks of one tenant, oldest first.
    pub async fn lifecycle_history(
        &self,
        client_key: &str,
    ) -> Result<Vec<LifecycleRecord>, StoreError> {
        Ok(with_database!(&self.db, |pool, _sql| {
            sqlx::query_as::<_, LifecycleRecord>(
                "SELECT client_key, event_type, event_id, base_url, status_after, received_at \
                 FROM tenant_lifecycle_events WHERE client_key = $1 ORDER BY id",
            )
            .bind(client_key)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Re-encrypts secrets made with older keys under the current key; returns how many.
    pub async fn reencrypt_secrets(&self) -> Result<u64, StoreError> {
        let mut changed = 0;
        for tenant in self.list().await? {
            let client_key = tenant.client_key.as_str();
            with_database!(&self.db, |pool, sql| {
                let mut tx = pool.begin_with(sql.begin_write).await?;
                if let Some((_, encrypted)) = fetch!(tx, client_key)
                    && self.keyring.needs_reencryption(&encrypted)
                {
                    let secret = self.keyring.decrypt(&encrypted, client_key)?;
                    let fresh = self.keyring.encrypt(&secret, client_key)?;
                    sqlx::query(
                        "UPDATE tenants SET secret_key_id = $2, secret_nonce = $3, \
                         secret_ciphertext = $4 WHERE client_key = $1",
                    )
                    .bind(client_key)
                    .bind(&fresh.key_id)
                    .bind(&fresh.nonce)
                    .bind(&fresh.ciphertext)
                    .execute(&mut *tx)
                    .await?;
                    changed += 1;
                }
                tx.commit().await?;
            });
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LifecycleEventType as E;
    use TenantStatus as S;

    #[test]
    fn disabled_and_uninstalled_in_either_order_end_uninstalled() {
        let a = next_status(
            Some(next_status(Some(S::Enabled), E::Disabled)),
            E::Uninstalled,
        );
        let b = next_status(
            Some(next_status(Some(S::Enabled), E::Uninstalled)),
            E::Disabled,
        );
        assert_eq!((a, b), (S::Uninstalled, S::Uninstalled));
        assert_eq!(
            next_status(Some(S::Uninstalled), E::Enabled),
            S::Uninstalled
        );
    }

    #[test]
    fn reinstall_keeps_enablement_and_revives_uninstalled() {
        assert_eq!(next_status(Some(S::Enabled), E::Installed), S::Enabled);
        assert_eq!(next_status(Some(S::Disabled), E::Installed), S::Disabled);
        assert_eq!(
            next_status(Some(S::Uninstalled), E::Installed),
            S::Installed
        );
        assert_eq!(next_status(None, E::Installed), S::Installed);
    }

    fn stamp(at_ms: i64) -> LifecycleStamp {
        LifecycleStamp {
            at_ms,
            event_id: format!("event-{at_ms:04}"),
        }
    }

    /// The status `events` lead to, applied in stamp order.
    fn in_stamp_order(events: &[(LifecycleEventType, LifecycleStamp)]) -> Option<TenantStatus> {
        let mut sorted = events.to_vec();
        sorted.sort_by(|a, b| a.1.cmp(&b.1));
        sorted
            .iter()
            .fold(None, |status, (event, _)| Some(next_status(status, *event)))
    }

    /// Applies `arrivals` one after the other as the store does (each with the audit rows
    /// of those before it) and returns the status after each.
    fn apply_all(arrivals: &[(LifecycleEventType, LifecycleStamp)]) -> Vec<Option<TenantStatus>> {
        let mut history = Vec::new();
        let mut statuses = Vec::new();
        for (event, stamp) in arrivals {
            let (status, _) =
                folded_status(history.clone(), *event, stamp).expect("known event types");
            history.push((
                event.as_str().to_string(),
                Some(stamp.event_id.clone()),
                Some(stamp.at_ms),
            ));
            statuses.push(status);
        }
        statuses
    }

    const STORY: [LifecycleEventType; 5] = [
        E::Installed,
        E::Enabled,
        E::Uninstalled,
        E::Installed,
        E::Enabled,
    ];

    #[test]
    fn a_replay_of_uninstall_reinstall_enable_in_any_order_never_moves_the_tenant_back() {
        let story: Vec<(LifecycleEventType, LifecycleStamp)> = STORY
            .iter()
            .enumerate()
            .map(|(i, event)| (*event, stamp(i as i64 + 1)))
            .collect();
        // Every order of the five (120): as a processor reading two topics might see them
        // after the ingest applied each as it arrived.
        let mut orders = vec![Vec::new()];
        for _ in 0..story.len() {
            orders = orders
                .into_iter()
                .flat_map(|order: Vec<usize>| {
                    (0..story.len())
                        .filter(|i| !order.contains(i))
                        .map(|i| {
                            let mut next = order.clone();
                            next.push(i);
                            next
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
        }
        assert_eq!(orders.len(), 120);
        for order in orders {
            let mut arrivals = story.clone();
            arrivals.extend(order.iter().map(|&i| story[i].clone()));
            let statuses = apply_all(&arrivals);
            assert_eq!(statuses[story.len() - 1], Some(S::Enabled));
            assert!(
                statuses[story.len()..]
                    .iter()
                    .all(|status| *status == Some(S::Enabled)),
                "replayed in order {order:?}: {statuses:?}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever order distinct callbacks arrive in, and however often each is applied,
        /// the status after each arrival is that of the callbacks seen so far applied in
        /// stamp order: an older transition never overrides a newer one.
        #[test]
        fn the_status_is_the_stamp_order_fold_of_what_arrived(
            kinds in proptest::collection::vec(0usize..4, 1..8),
            order in proptest::collection::vec(0usize..64, 1..24),
        ) {
            let all = [E::Installed, E::Enabled, E::Disabled, E::Uninstalled];
            let events: Vec<(LifecycleEventType, LifecycleStamp)> = kinds
                .iter()
                .enumerate()
                .map(|(i, kind)| (all[*kind], stamp(i as i64 * 10)))
                .collect();
            let arrivals: Vec<(LifecycleEventType, LifecycleStamp)> =
                order.iter().map(|i| events[i % events.len()].clone()).collect();
            let statuses = apply_all(&arrivals);
            for (step, status) in statuses.iter().enumerate() {
                let mut seen: Vec<(LifecycleEventType, LifecycleStamp)> = Vec::new();
                for arrival in &arrivals[..=step] {
                    if !seen.contains(arrival) {
                        seen.push(arrival.clone());
                    }
                }
                proptest::prop_assert_eq!(*status, in_stamp_order(&seen), "after {:?}", &arrivals[..=step]);
            }
        }
    }
}
