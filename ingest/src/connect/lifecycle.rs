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
    check_declared_length(&parts.headers, app.max_body)?;
    let raw = read_limited(body, app.max_body).await?;
    let payload = LifecyclePayload::parse(&raw).map_err(|e| match e {
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
    let target = request_target(&parts);
    let request = RequestTarget {
        method: parts.method.as_str(),
        target: &target,
        base_path: &app.base_path,
    };
    let token = token_of(&parts);
    match kind {
        LifecycleEventType::Installed => {
            authenticate_install(&connect, token.as_deref(), request, &payload).await?;
            // The base URL is where the app will send signed requests, so only allowed hosts.
            if !connect.allowlist.allows_url(&payload.base_url) {
                return Err(Rejection::HostNotAllowed);
            }
        }
        LifecycleEventType::Uninstalled => {
            let token = token.ok_or(AuthError::MissingToken)?;
            if connect.allow_legacy_installs && is_hs256(&token) {
                authenticate_with_tenant_secret(&connect, &token, request, &payload).await?;
            } else {
                connect
                    .installs
                    .verify(&token, request, &payload.client_key)
                    .await?;
            }
        }
        LifecycleEventType::Enabled | LifecycleEventType::Disabled => {
            let token = token.ok_or(AuthError::MissingToken)?;
            authenticate_with_tenant_secret(&connect, &token, request, &payload).await?;
        }
    }

    let mut envelope = Envelope::new(
        EventKind::Lifecycle(kind),
        &payload.client_key,
        &payload.base_url,
        bytes::Bytes::new(),
    );
    let known = match kind {
        LifecycleEventType::Installed => app
            .store
            .record_install(&payload, &envelope.id)
            .await
            .map(|_| true),
        _ => app
            .store
            .apply_lifecycle(&payload.client_key, kind, &envelope.id)
            .await
            .map(|tenant| tenant.is_some()),
    }
    .map_err(|e| Rejection::StoreUnavailable(e.to_string()))?;
    if let (LifecycleEventType::Installed, Some(installation)) = (kind, &payload.installation_id) {
        // Connect on Forge: the install names the Forge installation of the same site.
        app.forge
            .link_connect(installation, &payload.client_key)
            .await
            .map_err(|e| Rejection::StoreUnavailable(e.to_string()))?;
    }
    connect.secrets.changed(&payload.client_key).await;
    if !known {
        // Only a signed uninstall gets here for a tenant this app never stored: nothing
        // to change and nothing for processors to act on.
        tracing::info!(
            event = kind.as_str(),
            "lifecycle callback for an unknown tenant; nothing to do"
        );
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    envelope.data = redact_shared_secret(&raw)
        .map_err(|_| Rejection::MalformedBody("not a lifecycle JSON object".into()))?
        .into();
    app.publish(&envelope).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A signed install (RS256 by Atlassian). With legacy installs allowed, a first install may
/// come unsigned and a reinstall signed with the tenant's current secret; a known tenant is
/// never overwritten by anything else.
async fn authenticate_install(
    connect: &ConnectState,
    token: Option<&str>,
    request: RequestTarget<'_>,
    payload: &LifecyclePayload,
) -> Result<(), Rejection> {
    match token {
        Some(token) if connect.allow_legacy_installs && is_hs256(token) => {
            authenticate_with_tenant_secret(connect, token, request, payload).await
        }
        Some(token) => {
            connect
                .installs
                .verify(token, request, &payload.client_key)
                .await?;
            Ok(())
        }
        None if connect.allow_legacy_installs => {
            match connect.app.store.get(&payload.client_key).await {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err(AuthError::MissingToken.into()),
                Err(err) => Err(Rejection::StoreUnavailable(err.to_string())),
            }
        }
        None => Err(AuthError::MissingToken.into()),
    }
}

/// HS256 with the stored secret of the tenant the body names.
async fn authenticate_with_tenant_secret(
    connect: &ConnectState,
    token: &str,
    request: RequestTarget<'_>,
    payload: &LifecyclePayload,
) -> Result<(), Rejection> {
    // Notifications may trail an uninstall (Confluence sends `disabled` and `uninstalled`
    // in either order), so an uninstalled tenant is still recognised here.
    let (verified, _) = connect
        .secrets
        .verify(token, request, Uninstalled::Accept)
        .await?;
    if verified.issuer != payload.client_key {
        return Err(AuthError::IssuerMismatch.into());
    }
    Ok(())
}

fn is_hs256(token: &str) -> bool {
    UnverifiedToken::parse(token).is_ok_and(|t| t.algorithm() == "HS256")
}
