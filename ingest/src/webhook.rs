//! `POST /webhooks/{event}`: authenticate, check the body, publish, answer once durable.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tributary_common::connect::{AuthError, RequestTarget};
use tributary_common::envelope::{Envelope, EventKind, subject_of};

use crate::app::AppState;
use crate::body::{check_declared_length, check_json_content_type, read_limited, request_target};
use crate::rejection::Rejection;
use crate::secrets::Uninstalled;

/// The response header naming the id (`ce_id`) the accepted event travels under.
pub const EVENT_ID_HEADER: &str = "tributary-event-id";

pub async fn webhook(
    State(app): State<Arc<AppState>>,
    event: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, Rejection> {
    let Ok(Path(event)) = event else {
        return Err(Rejection::UnknownEvent);
    };
    if !app.events.contains(&event) {
        return Err(Rejection::UnknownEvent);
    }
    let (parts, body) = request.into_parts();
    check_json_content_type(&parts.headers)?;
    check_declared_length(&parts.headers, app.max_body)?;
    // The token is checked before the body is read, so an unauthenticated caller never gets
    // a buffer.
    let token = crate::body::token_of(&parts).ok_or(AuthError::MissingToken)?;
    let target = request_target(&parts);
    let (verified, tenant) = app
        .secrets
        .verify(
            &token,
            RequestTarget {
                method: parts.method.as_str(),
                target: &target,
                base_path: &app.base_path,
            },
            Uninstalled::Refuse,
        )
        .await?;
    let body = read_limited(body, app.max_body).await?;
    let json: Value = serde_json::from_slice(&body).map_err(|e| {
        Rejection::MalformedBody(format!(
            "not JSON ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    if !json.is_object() {
        return Err(Rejection::MalformedBody("not a JSON object".into()));
    }
    let envelope = Envelope::new(
        EventKind::Webhook(event.clone()),
        &verified.issuer,
        &tenant.base_url,
        body,
    )
    .with_subject(subject_of(&json));
    app.publisher
        .publish(app.router.topic_for(&event), &envelope)
        .await
        .map_err(|e| Rejection::BrokerUnavailable(e.to_string()))?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(id) = HeaderValue::from_str(&envelope.id) {
        response.headers_mut().insert(EVENT_ID_HEADER, id);
    }
    Ok(response)
}
