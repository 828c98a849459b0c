//! `POST /webhooks/{event}`: authenticate, check the body, publish, answer once durable.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use tributary_common::connect::{AuthError, RequestTarget};
use tributary_common::envelope::{Envelope, EventKind, JsonBody, read_object_subject};

use super::secrets::Uninstalled;
use super::{ConnectState, token_of};
use crate::app::accepted;
use crate::body::{check_declared_length, check_json_content_type, read_limited, request_target};
use crate::rejection::Rejection;

pub async fn webhook(
    State(connect): State<Arc<ConnectState>>,
    event: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, Rejection> {
    let Ok(Path(event)) = event else {
        return Err(Rejection::UnknownEvent);
    };
    handle(connect, event, request).await
}

/// The route of one subscribed event, named in its path: the same answers as [`webhook`]
/// without the path parameter's extraction and percent-decoding per request.
pub async fn webhook_named(
    connect: Arc<ConnectState>,
    event: Arc<str>,
    request: Request,
) -> Result<Response, Rejection> {
    handle(connect, event.to_string(), request).await
}

async fn handle(
    connect: Arc<ConnectState>,
    event: String,
    request: Request,
) -> Result<Response, Rejection> {
    let app = &connect.app;
    if !connect.events.contains(&event) {
        return Err(Rejection::UnknownEvent);
    }
    let (parts, body) = request.into_parts();
    check_json_content_type(&parts.headers)?;
    check_declared_length(&parts.headers, app.max_body)?;
    // The token is checked before the body is read, so an unauthenticated caller never gets
    // a buffer.
    let token = token_of(&parts).ok_or(AuthError::MissingToken)?;
    let target = request_target(&parts);
    let (issuer, tenant) = connect
        .secrets
        .verify(
            &token,
            RequestTarget {
                method: parts.method.as_str(),
                target,
                base_path: &app.base_path,
            },
            Uninstalled::Refuse,
        )
        .await?;
    let body = read_limited(body, app.max_body).await?;
    let subject = match read_object_subject(&body).map_err(|e| {
        Rejection::MalformedBody(format!(
            "not JSON ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })? {
        JsonBody::Object { subject } => subject,
        JsonBody::NotObject => return Err(Rejection::MalformedBody("not a JSON object".into())),
    };
    let envelope = Envelope::new(EventKind::Webhook(event), &issuer, &tenant.base_url, body)
        .with_subject(subject);
    app.publish(&envelope).await?;
    Ok(accepted(&envelope))
}
