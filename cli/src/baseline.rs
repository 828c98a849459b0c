//! `tributary baseline-server`: the machine's HTTP ceiling. It accepts what the ingest
//! accepts (a POST with a body) and answers 204 without doing anything, so load-generator
//! figures against it bound what any HTTP service on this machine can do.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;

pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let app = Router::new().route(
        "/webhooks/{event}",
        post(|_body: Bytes| async { StatusCode::NO_CONTENT }),
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    eprintln!("baseline server on http://{}", listener.local_addr()?);
    let shutdown = tributary_common::shutdown::on_signals();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serving")
}
