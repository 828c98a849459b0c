//! `POST /forge/events`: verify the invocation token, record the installation (and its
//! app system token), give the delivery its event id, publish, answer once durable.
//!
//! Forge sends no event id, and two distinct events may have identical bodies, so a first
//! delivery always gets a fresh id. Forge retries a delivery that got no 2xx (up to 4
//! times, about 60 s apart) with `retryContext` added; a retry gets the id of the latest
//! delivery of the same installation with the same body (`retryContext` aside) within the
//! retry window, so the processor's effects-once runs it once.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tributary_common::connect::LifecycleEventType;
use tributary_common::connect::token::now_unix;
use tributary_common::envelope::{Envelope, EventKind, subject_of};
use tributary_common::forge::{ForgeEvent, ForgeVerifier, SystemToken, is_forge_event_name};
use tributary_common::store::{ForgeStatus, InvocationRecord};

use super::ForgeState;
use super::refusal::ForgeRefusal;
use crate::app::accepted;
use crate::body::{check_declared_length, check_json_content_type, read_limited};
use crate::rejection::Rejection;

/// The header carrying the app system token (with `appSystemToken` enabled).
pub const SYSTEM_TOKEN_HEADER: &str = "x-forge-oauth-system";

pub async fn deliver(
    State(forge): State<Arc<ForgeState>>,
    request: Request,
) -> Result<Response, ForgeRefusal> {
    // Forge counts a delivery unanswered after 5 s as failed, so everything up to the
    // broker's acknowledgement shares one deadline below that. Work cut short before the
    // publish is redone by Forge's retry (each step is safe to repeat); the broker wait
    // gets only what is left.
    let deadline = tokio::time::Instant::now() + forge.deadline;
    let envelope = tokio::time::timeout_at(deadline, prepare(&forge, request))
        .await
        .map_err(|_| ForgeRefusal::DeadlineExceeded(forge.deadline))??;
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if left.is_zero() {
        return Err(ForgeRefusal::DeadlineExceeded(forge.deadline));
    }
    forge.app.publish_within(&envelope, left).await?;
    Ok(accepted(&envelope))
}

/// Everything before the publish: the token, the body, the installation and its token,
/// the event id and the lifecycle effects; the envelope to publish.
async fn prepare(forge: &ForgeState, request: Request) -> Result<Envelope, ForgeRefusal> {
    let app = &forge.app;
    let (parts, body) = request.into_parts();
    check_json_content_type(&parts.headers)?;
    check_declared_length(&parts.headers, app.max_body)?;
    // The token is checked before the body is read: an unauthenticated caller never gets
    // a buffer.
    let authorization = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let invocation = forge
        .verifier
        .verify(ForgeVerifier::bearer(authorization)?)
        .await?;
    let raw = read_limited(body, app.max_body).await?;
    let json: Value =
        serde_json::from_slice(&raw).map_err(|_| Rejection::MalformedBody("not JSON".into()))?;
    let Value::Object(fields) = &json else {
        return Err(Rejection::MalformedBody("not a JSON object".into()).into());
    };
    let event_type = fields
        .get("eventType")
        .and_then(Value::as_str)
        .filter(|name| is_forge_event_name(name))
        .ok_or_else(|| Rejection::MalformedBody("field `eventType`".into()))?
        .to_string();

    // A value the database refuses (a NUL in a claim, say) is the caller's fault, not an outage.
    let store_failed =
        |e: tributary_common::store::StoreError| ForgeRefusal::from(Rejection::from_store(e));
    let token = system_token(&parts.headers, forge.token_ttl.as_secs());
    let installation = forge
        .store
        .record_invocation(
            &InvocationRecord {
                installation_id: &invocation.installation_id,
                cloud_id: invocation.cloud_id.as_deref(),
                api_base_url: &invocation.api_base_url,
                app_id: &invocation.app_id,
                environment_type: invocation.environment_type.as_deref(),
            },
            token.as_ref().map(|(t, expires)| (t, *expires)),
        )
        .await
        .map_err(store_failed)?;

    let fresh_id = uuid::Uuid::now_v7().to_string();
    let event_id = forge
        .store
        .delivery_id(
            &invocation.installation_id,
            &content_hash(fields),
            fields.contains_key("retryContext"),
            &fresh_id,
            chrono::Utc::now().timestamp_millis(),
            i64::try_from(forge.retry_window.as_millis()).unwrap_or(i64::MAX),
        )
        .await
        .map_err(store_failed)?;

    let connect_tenant = app
        .store
        .get(&installation.tenant_key)
        .await
        .map_err(store_failed)?;
    if let Some(lifecycle) = ForgeEvent::lifecycle(&event_type) {
        let (status, connect_event) = match lifecycle {
            ForgeEvent::Installed | ForgeEvent::Upgraded => {
                (ForgeStatus::Installed, LifecycleEventType::Installed)
            }
            ForgeEvent::Uninstalled => (ForgeStatus::Uninstalled, LifecycleEventType::Uninstalled),
        };
        // An upgrade says nothing new about the status; an install revives an uninstalled
        // installation, an uninstall ends it, for the Connect tenant too when linked.
        if lifecycle != ForgeEvent::Upgraded {
            forge
                .store
                .set_status(&invocation.installation_id, status)
                .await
                .map_err(store_failed)?;
            if connect_tenant.is_some() {
                app.store
                    .apply_lifecycle(&installation.tenant_key, connect_event, &event_id)
                    .await
                    .map_err(store_failed)?;
                forge
                    .connect_tenants
                    .changed(&installation.tenant_key)
                    .await;
            }
        }
    }

    let source = connect_tenant
        .map(|t| t.base_url)
        .unwrap_or_else(|| invocation.api_base_url.clone());
    let mut envelope = Envelope::new(
        EventKind::Forge(event_type),
        &installation.tenant_key,
        &source,
        raw,
    )
    .with_subject(subject_of(&json));
    envelope.id = event_id;
    Ok(envelope)
}

/// The app system token and when to stop using it: the token's own `exp` when it is a
/// JWT that says, otherwise `ttl_seconds` from now. Only ever stored encrypted.
fn system_token(headers: &HeaderMap, ttl_seconds: u64) -> Option<(SystemToken, i64)> {
    let token = headers
        .get(SYSTEM_TOKEN_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .to_string();
    if token.is_empty() {
        return None;
    }
    let fallback = now_unix().saturating_add(i64::try_from(ttl_seconds).unwrap_or(i64::MAX / 4));
    let expires = token
        .split('.')
        .nth(1)
        .and_then(|claims| URL_SAFE_NO_PAD.decode(claims.trim_end_matches('=')).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|claims| claims.get("exp").and_then(Value::as_i64))
        .unwrap_or(fallback);
    Some((SystemToken::new(token), expires))
}

/// A hash of the delivery's content without `retryContext`, independent of key order, so
/// a retry of a delivery hashes like the delivery.
pub fn content_hash(fields: &Map<String, Value>) -> String {
    let mut digest = Sha256::new();
    for (name, value) in sorted(fields) {
        if name == "retryContext" {
            continue;
        }
        digest.update(name.as_bytes());
        digest.update([0]);
        digest.update(canonical(value).as_bytes());
        digest.update([0]);
    }
    hex_lower(&digest.finalize())
}

fn sorted(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let inner: Vec<String> = sorted(map)
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", inner.join(","))
        }
        other => other.to_string(),
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn the_retry_context_and_key_order_do_not_change_the_hash() {
        let first = object(
            json!({"eventType": "avi:confluence:viewed:page", "content": {"id": "1", "title": "T"}}),
        );
        let retry = object(
            json!({"content": {"title": "T", "id": "1"}, "retryContext": {"retryCount": 1}, "eventType": "avi:confluence:viewed:page"}),
        );
        let other = object(
            json!({"eventType": "avi:confluence:viewed:page", "content": {"id": "2", "title": "T"}}),
        );
        assert_eq!(content_hash(&first), content_hash(&retry));
        assert_ne!(content_hash(&first), content_hash(&other));
    }

    #[test]
    fn a_jwt_system_token_expires_when_it_says() {
        let claims = URL_SAFE_NO_PAD.encode(br#"{"exp":4000000000}"#);
        let mut headers = HeaderMap::new();
        headers.insert(
            SYSTEM_TOKEN_HEADER,
            format!("e30.{claims}.sig").parse().expect("header"),
        );
        let (_, expires) = system_token(&headers, 60).expect("token");
        assert_eq!(expires, 4_000_000_000);
        headers.insert(SYSTEM_TOKEN_HEADER, "opaque".parse().expect("header"));
        let (token, expires) = system_token(&headers, 60).expect("token");
        assert_eq!(token.expose(), "opaque");
        assert!(expires > now_unix() && expires <= now_unix() + 60);
        assert!(format!("{token:?}").contains("redacted"));
    }
}
