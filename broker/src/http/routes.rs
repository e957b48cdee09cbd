//! The URL table, health checks and the JSON error every failure answers with.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::{api, dashboard, metrics, HttpState, MAX_BODY_BYTES};
use crate::store::DiskState;

type AppState = State<Arc<HttpState>>;

/// Every route; anything else is a JSON 404.
pub(super) fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/", get(dashboard::index))
        .route("/assets/app.js", get(dashboard::script))
        .route("/assets/style.css", get(dashboard::style))
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/overview", get(api::overview))
        .route("/api/topics", get(api::topics))
        .route("/api/topics/{topic}", get(api::topic))
        .route("/api/topics/{topic}/messages", post(api::send_test_message))
        .route("/api/groups", get(api::groups))
        .route("/api/groups/{group}", get(api::group))
        .route("/api/groups/{group}/dlq", get(api::dlq))
        .route("/api/groups/{group}/dlq/resend", post(api::dlq_resend))
        .route("/api/messages/{id}", get(api::message))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            require_credentials,
        ))
        .with_state(state)
}

/// The client's address, put on each request by the accept loop (for the rate limit of
/// failed authentications).
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerIp(pub(super) std::net::IpAddr);

/// With `--auth on`: health checks stay open (probes carry no credentials), `/metrics`
/// takes any user, everything else (the dashboard shows every topic, group and message)
/// an administrator. Credentials: `Basic base64(AK:SK)` or `Bearer AK:SK`.
async fn require_credentials(
    State(state): AppState,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use crate::security::SecurityError;
    let path = req.uri().path();
    if !state.security.auth_enabled() || matches!(path, "/healthz" | "/readyz") {
        return next.run(req).await;
    }
    let ip = req
        .extensions()
        .get::<PeerIp>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |p| p.0);
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let refuse = |status: StatusCode, message: String| {
        let mut r = (status, Json(json!({ "error": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"FerroMQ\""),
            );
        }
        r
    };
    match state.security.verify_http(ip, presented) {
        Ok(p) if p.is_admin() || path == "/metrics" => next.run(req).await,
        Ok(p) => refuse(
            StatusCode::FORBIDDEN,
            format!(
                "user {:?} is not an administrator; the dashboard and API need one (/metrics takes any user)",
                p.access_key()
            ),
        ),
        Err(e @ SecurityError::TooManyAttempts { .. }) => {
            refuse(StatusCode::TOO_MANY_REQUESTS, e.to_string())
        }
        Err(e) => refuse(StatusCode::UNAUTHORIZED, e.to_string()),
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no such path: {}; see / (dashboard), /metrics, /healthz, /readyz, /api/...",
        uri.path()
    ))
}

async fn metrics_handler(State(state): AppState) -> Result<Response, ApiError> {
    let Some(services) = state.services().cloned() else {
        return Err(ApiError::starting());
    };
    let recorder = Arc::clone(&state.recorder);
    let per_queue = state.per_queue;
    // Reading every queue's state is blocking work; it never runs on a runtime worker.
    let text =
        tokio::task::spawn_blocking(move || metrics::render(&services, &recorder, per_queue))
            .await
            .map_err(|e| ApiError::internal(format!("metrics task failed: {e}")))?
            .map_err(|e| ApiError::internal(format!("metrics encoding failed: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Liveness: the process answers.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the store is open and recovered, the broker is not stopping, and the disk
/// is not full; otherwise 503 with the reason.
async fn readyz(State(state): AppState) -> Response {
    let Some(services) = state.services() else {
        return not_ready("recovering: the store is being opened");
    };
    if services.shutdown.is_cancelled() {
        return not_ready("shutting down");
    }
    let disk = services.store.disk().status();
    if disk.state == DiskState::Full {
        return not_ready(&format!(
            "disk full: {} bytes free, {} kept in reserve; sends are refused",
            disk.free_bytes, disk.reserve_bytes
        ));
    }
    Json(json!({ "ready": true })).into_response()
}

fn not_ready(reason: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "ready": false, "reason": reason })),
    )
        .into_response()
}
