//! `POST /webhooks/{event}`: authenticate, check the body, publish, answer once durable.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::Method;
use axum::response::Response;
use futures::future::BoxFuture;
use hyper::body::Incoming;
use tributary_common::connect::{AuthError, RequestTarget};
use tributary_common::envelope::{Envelope, EventKind, JsonBody, read_object_subject};

use super::secrets::Uninstalled;
use super::{ConnectState, token_of};
use crate::app::accepted;
use crate::body::{check_declared_length, check_json_content_type, read_limited, request_target};
use crate::observe::RouteEdge;
use crate::rejection::Rejection;
use crate::server::DirectRoutes;

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

/// The paths of the subscribed events' own routes, as the router has them: `/webhooks/<event>`
/// and, when the app base URL has a path, the same under it.
pub struct WebhookPaths(HashMap<String, Arc<str>>);

impl WebhookPaths {
    pub fn new<'a>(events: impl IntoIterator<Item = &'a str>, base_path: &str) -> Self {
        let mut paths = HashMap::new();
        for name in events {
            let event: Arc<str> = Arc::from(name);
            let path = super::descriptor::webhook_path(name);
            if !base_path.is_empty() {
                paths.insert(format!("{base_path}{path}"), event.clone());
            }
            paths.insert(path, event);
        }
        WebhookPaths(paths)
    }

    /// The event a `POST` to `path` is a webhook of. Any other request, and any other path
    /// (an unknown event, one spelled with percent-escapes), is the router's to answer.
    pub fn event(&self, method: &Method, path: &str) -> Option<&Arc<str>> {
        if method != Method::POST {
            return None;
        }
        self.0.get(path)
    }
}

/// The subscribed events' webhook routes answered ahead of the router, behind the same edge
/// as the router's webhook routes and with the same answers.
pub struct DirectWebhooks {
    pub connect: Arc<ConnectState>,
    pub edge: RouteEdge,
    pub paths: WebhookPaths,
}

impl DirectRoutes for DirectWebhooks {
    fn route(
        &self,
        request: hyper::Request<Incoming>,
    ) -> Result<BoxFuture<'static, Response>, hyper::Request<Incoming>> {
        let Some(event) = self.paths.event(request.method(), request.uri().path()) else {
            return Err(request);
        };
        let (connect, edge, event) = (self.connect.clone(), self.edge.clone(), event.clone());
        Ok(Box::pin(async move {
            edge.serve(request.map(Body::new), |request| {
                webhook_named(connect, event, request)
            })
            .await
        }))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_to_a_subscribed_events_path_is_a_direct_webhook() {
        let paths = WebhookPaths::new(["page_created", "page_updated"], "/app");
        for path in ["/webhooks/page_created", "/app/webhooks/page_created"] {
            assert_eq!(
                paths.event(&Method::POST, path).map(|e| &**e),
                Some("page_created"),
                "{path}"
            );
        }
        assert_eq!(
            paths
                .event(&Method::POST, "/app/webhooks/page_updated")
                .map(|e| &**e),
            Some("page_updated")
        );
    }

    /// Everything else keeps the router's answer: 405 for another method, 404 or the
    /// parameter route's refusal for another path.
    #[test]
    fn anything_else_is_left_to_the_router() {
        let paths = WebhookPaths::new(["page_created"], "/app");
        assert!(
            paths
                .event(&Method::GET, "/webhooks/page_created")
                .is_none()
        );
        assert!(
            paths
                .event(&Method::PUT, "/app/webhooks/page_created")
                .is_none()
        );
        for path in [
            "/webhooks/page_viewed",
            "/webhooks/page%5Fcreated",
            "/webhooks/page_created/",
            "/webhooks/",
            "/other/webhooks/page_created",
            "/appwebhooks/page_created",
        ] {
            assert!(paths.event(&Method::POST, path).is_none(), "{path}");
        }
        let at_root = WebhookPaths::new(["page_created"], "");
        assert!(
            at_root
                .event(&Method::POST, "/app/webhooks/page_created")
                .is_none()
        );
        assert!(
            at_root
                .event(&Method::POST, "/webhooks/page_created")
                .is_some()
        );
    }
}
