//! `POST /lifecycle/{installed,uninstalled,enabled,disabled}`.
//!
//! Each callback is authenticated, applied to the tenant store and published (without the
//! shared secret); the answer is 204 only once both are durable. A failure answers 5xx, and
//! Confluence's retry of the same callback is harmless: the store upserts.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tributary_common::connect::lifecycle::{PayloadError, redact_shared_secret};
use tributary_common::connect::{
    AuthError, LifecycleEventType, LifecyclePayload, RequestTarget, UnverifiedToken,
};
use tributary_common::envelope::{Envelope, EventKind};
use tributary_common::store::{InstallMode, LifecycleStamp, StoreError};

use super::secrets::Uninstalled;
use super::{ConnectState, token_of};
use crate::body::{check_declared_length, check_json_content_type, read_limited, request_target};
use crate::rejection::Rejection;

pub async fn lifecycle(
    kind: LifecycleEventType,
    State(connect): State<Arc<ConnectState>>,
    request: Request,
) -> Result<Response, Rejection> {
    let app = &connect.app;
    let (parts, body) = request.into_parts();
    check_json_content_type(&parts.headers)?;
    check_declared_length(&parts.headers, connect.lifecycle_max_body)?;
    let target = request_target(&parts);
    let request = RequestTarget {
        method: parts.method.as_str(),
        target,
        base_path: &app.base_path,
    };
    // The token is checked before the body is read wherever the protocol allows (all but
    // a legacy unsigned install), so a stranger's body never gets a buffer; what only the
    // body can tell (its clientKey) is compared once it is read.
    let token = token_of(&parts);
    let signer = authenticate(&connect, kind, token.as_deref(), request).await?;
    let raw = read_limited(body, connect.lifecycle_max_body).await?;
    let mut payload = LifecyclePayload::parse(&raw).map_err(|e| match e {
        PayloadError::BadField(field) => Rejection::MalformedBody(format!("field `{field}`")),
        // The parser's message may quote body values, the secret among them: not for logs.
        PayloadError::Invalid(_) => Rejection::MalformedBody("not a lifecycle JSON object".into()),
    })?;
    if payload.event_type != kind {
        return Err(Rejection::EventTypeMismatch);
    }
    if payload.key != connect.app_key {
        return Err(Rejection::AppKeyMismatch);
    }
    if kind == LifecycleEventType::Installed && payload.shared_secret.is_none() {
        return Err(Rejection::MalformedBody("field `sharedSecret`".into()));
    }
    let install_mode = match signer {
        Signer::Tenant(issuer) => {
            if issuer != payload.client_key {
                return Err(AuthError::IssuerMismatch.into());
            }
            InstallMode::Upsert
        }
        Signer::Unsigned => InstallMode::FirstOnly,
    };
    if kind == LifecycleEventType::Installed {
        // The base URL is where the app will send signed requests, so only allowed hosts;
        // what is stored (and published) is the normalised URL that was checked.
        payload.base_url = connect
            .allowlist
            .check_base_url(&payload.base_url)
            .map_err(|err| {
                tracing::info!(reason = %err, "install baseUrl refused");
                Rejection::HostNotAllowed
            })?;
    }

    // The source is filled in from the stored tenant below: the body's baseUrl of an
    // `enabled`, `disabled` or `uninstalled` is not what was verified at install.
    let mut envelope = Envelope::new(
        EventKind::Lifecycle(kind),
        &payload.client_key,
        "",
        bytes::Bytes::new(),
    );
    // Stamped with the callback's arrival, which is also the event's time: the processors
    // applying the same event later then agree with what was done here.
    let stamp = LifecycleStamp::new(envelope.time, &envelope.id);
    let stored = match kind {
        LifecycleEventType::Installed => app
            .store
            .record_install_at(&payload, &stamp, install_mode)
            .await
            .map(Some),
        _ => {
            app.store
                .apply_lifecycle_at(&payload.client_key, kind, &stamp)
                .await
        }
    }
    .map_err(|err| match err {
        // An unsigned install lost to the tenant (or a concurrent first install) existing.
        StoreError::AlreadyInstalled => Rejection::Auth(AuthError::MissingToken),
        err => Rejection::from_store(err),
    })?;
    if let (LifecycleEventType::Installed, Some(installation)) = (kind, &payload.installation_id) {
        // Connect on Forge: the install names the Forge installation of the same site.
        app.forge
            .link_connect(installation, &payload.client_key)
            .await
            .map_err(Rejection::from_store)?;
    }
    connect.secrets.changed(&payload.client_key).await;
    let Some(tenant) = stored else {
        // Only a signed uninstall gets here for a tenant this app never stored: nothing
        // to change and nothing for processors to act on.
        tracing::info!(
            event = kind.as_str(),
            "lifecycle callback for an unknown tenant; nothing to do"
        );
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    envelope.source = tenant.base_url;
    envelope.data = redact_shared_secret(&raw)
        .map_err(|_| Rejection::MalformedBody("not a lifecycle JSON object".into()))?
        .into();
    app.publish(&envelope).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Who signed a lifecycle callback, as far as the token alone tells.
enum Signer {
    /// A verified token whose `iss` (the clientKey it speaks for) must be the body's.
    Tenant(String),
    /// No token: a legacy first install, which may only create a tenant.
    Unsigned,
}

/// `installed` and `uninstalled` are signed installs (RS256 by Atlassian); with legacy
/// installs allowed, a first install may come unsigned and a reinstall or uninstall HS256
/// with the tenant's current secret. `enabled` and `disabled` are HS256 with the secret.
/// Notifications may trail an uninstall (Confluence sends `disabled` and `uninstalled` in
/// either order), so an uninstalled tenant is still recognised for HS256 callbacks.
async fn authenticate(
    connect: &ConnectState,
    kind: LifecycleEventType,
    token: Option<&str>,
    request: RequestTarget<'_>,
) -> Result<Signer, Rejection> {
    let signed_install = matches!(
        kind,
        LifecycleEventType::Installed | LifecycleEventType::Uninstalled
    );
    let issuer = match token {
        None if kind == LifecycleEventType::Installed && connect.allow_legacy_installs => {
            return Ok(Signer::Unsigned);
        }
        None => return Err(AuthError::MissingToken.into()),
        Some(token) if signed_install && !(connect.allow_legacy_installs && is_hs256(token)) => {
            connect
                .installs
                .verify_token(token, request)
                .await?
                .client_key
        }
        Some(token) => {
            let (issuer, _) = connect
                .secrets
                .verify(token, request, Uninstalled::Accept)
                .await?;
            issuer
        }
    };
    Ok(Signer::Tenant(issuer))
}

fn is_hs256(token: &str) -> bool {
    UnverifiedToken::parse(token).is_ok_and(|t| t.algorithm() == "HS256")
}
