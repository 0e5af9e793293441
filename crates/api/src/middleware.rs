//! What wraps every request: a log line, CORS, and a last-resort answer to panics.

use std::{any::Any, time::Instant};

use axum::{
    Json,
    extract::Request,
    middleware::Next,
    response::{IntoResponse, Response},
};
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
/// hold an access token), status, and time taken.
pub async fn log_request(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let path = redact_secrets(request.uri().path());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(target: "conduit::request", "{method} {path} {status} {ms:.1}ms");
    response
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
