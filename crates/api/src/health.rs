//! For the admin's tools: `GET /_conduit/health` on every listener (load
//! balancers, Docker's HEALTHCHECK) and `GET /metrics` on its own listener,
//! which only the metrics port serves.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use conduit_service::Services;
use serde_json::json;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.route("/_conduit/health", get(health))
}

/// 200 `{"status": "ok"}` when ready, 503 with the reason when not.
async fn health(State(services): State<Arc<Services>>) -> Response {
    match services.ready() {
        Ok(()) => Json(json!({ "status": "ok" })).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "reason": reason })),
        )
            .into_response(),
    }
}

/// The metrics listener's router: `/metrics` and the health check.
pub fn metrics_router(services: Arc<Services>) -> Router {
    routes(Router::new().route("/metrics", get(metrics))).with_state(services)
}

async fn metrics(State(services): State<Arc<Services>>) -> Response {
    match services.metrics_text() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
