//! `GET /healthz` (the process answers) and `GET /readyz` (its dependencies answer too).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::app::AppState;

/// How long one readiness probe waits for each dependency; a probe must answer quickly even
/// when a dependency hangs.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(app): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    if app.stopping.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "stopping" })),
        );
    }
    let database = async {
        tokio::time::timeout(PROBE_TIMEOUT, app.store.database().ping())
            .await
            .is_ok_and(|result| result.is_ok())
    };
    let broker = app.publisher.broker_reachable(PROBE_TIMEOUT);
    let (database, broker) = tokio::join!(database, broker);
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let status = if database && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ready" } else { "unready" },
            "database": word(database),
            "broker": word(broker),
        })),
    )
}
