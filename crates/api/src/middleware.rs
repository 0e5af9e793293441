//! What wraps every request: a log line, CORS, and a last-resort answer to panics.

use std::{any::Any, sync::Arc, time::Instant};

use axum::{
    Json,
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use conduit_service::{Services, metrics::Endpoint};
use http::{HeaderName, Method, StatusCode, header};
use serde_json::json;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Path segments that are secrets: the one after each of these.
const SECRET_AFTER: &[&str] = &["/_conduit/invite/", "/registration_tokens/"];

/// The path with registration tokens replaced by `<redacted>`, so logs do
/// not hand out invites.
fn redact_secrets(path: &str) -> String {
    for marker in SECRET_AFTER {
        if let Some(at) = path.find(marker) {
            let start = at + marker.len();
            let end = path[start..].find('/').map_or(path.len(), |e| start + e);
            if &path[start..end] != "new" {
                return format!("{}<redacted>{}", &path[..start], &path[end..]);
            }
        }
    }
    path.to_owned()
}

/// One line per request at info: method, path (never the query, which may
/// hold an access token), status, and time taken; and the request counted
/// in the metrics under its route (never the path, which holds ids).
pub async fn log_request(
    State(services): State<Arc<Services>>,
    request: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let path = redact_secrets(request.uri().path());
    let endpoint = match request.extensions().get::<MatchedPath>() {
        Some(route) => Endpoint(route.as_str().into()),
        None => Endpoint(UNMATCHED.clone()),
    };
    let response = next.run(request).await;
    let took = start.elapsed();
    let status = response.status().as_u16();
    let ms = took.as_secs_f64() * 1000.0;
    tracing::info!(target: "conduit::request", "{method} {path} {status} {ms:.1}ms");
    services
        .metrics
        .request(endpoint, method_label(&method), status, took);
    response
}

/// The label of requests no route took.
static UNMATCHED: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| "unmatched".into());

/// The standard verbs by name, any other as "other": a client cannot grow
/// the metrics' label set.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// CORS as the client-server spec asks: any origin (Element Web runs in a browser).
pub fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            HeaderName::from_static("x-requested-with"),
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
        ])
}

/// Turns a panic in a handler into the spec's `M_UNKNOWN` 500 instead of a dropped connection.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!("handler panicked: {what}");
    let body = json!({ "errcode": "M_UNKNOWN", "error": "Internal server error." });
    (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_redacted_from_logged_paths() {
        use super::redact_secrets;
        assert_eq!(
            redact_secrets("/_conduit/invite/abc"),
            "/_conduit/invite/<redacted>"
        );
        assert_eq!(
            redact_secrets("/_synapse/admin/v1/registration_tokens/abc"),
            "/_synapse/admin/v1/registration_tokens/<redacted>"
        );
        assert_eq!(
            redact_secrets("/_synapse/admin/v1/registration_tokens/new"),
            "/_synapse/admin/v1/registration_tokens/new"
        );
        assert_eq!(
            redact_secrets("/_matrix/client/versions"),
            "/_matrix/client/versions"
        );
    }
}
