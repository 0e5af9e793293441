//! The OAuth 2.0 API's machine endpoints: server metadata, client
//! registration, token and revocation. They speak OAuth's formats (form
//! bodies in, RFC 6749 errors out), not the Matrix API's. The sign-in
//! pages are in [`pages`]; the logic in `conduit_service::oauth`.

mod pages;

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use axum::{
    Json,
    body::Bytes,
    extract::{ConnectInfo, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use conduit_service::{
    Services,
    oauth::{OAuthError, REGISTRATION_PATH, REVOCATION_PATH, TOKEN_PATH},
};
use serde_json::Value as JsonValue;

pub fn routes(router: axum::Router<Arc<Services>>) -> axum::Router<Arc<Services>> {
    let router = router
        .route("/_matrix/client/v1/auth_metadata", get(metadata))
        // The MSC2965 path, which matrix-rust-sdk asks of servers that do
        // not advertise Matrix 1.15.
        .route(
            "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
            get(metadata),
        )
        .route(REGISTRATION_PATH, post(register_client))
        .route(TOKEN_PATH, post(token))
        .route(REVOCATION_PATH, post(revoke));
    pages::routes(router)
}

/// An OAuth answer: JSON, never cached (RFC 6749 §5.1).
fn oauth_json(status: StatusCode, body: &JsonValue) -> Response {
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn oauth_error(error: &OAuthError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    oauth_json(status, &error.to_json())
}

/// `GET /_matrix/client/v1/auth_metadata`.
async fn metadata(State(services): State<Arc<Services>>) -> Json<JsonValue> {
    Json(services.oauth_metadata())
}

/// Client registrations are stored for anyone: limited per address, like
/// starting an SSO sign-in.
fn limited(services: &Services, addr: &SocketAddr) -> Option<Response> {
    services
        .sso_start_limiter
        .check(&addr.ip().to_string())
        .err()
        .map(|_| {
            let mut error = OAuthError::new(
                "temporarily_unavailable",
                "too many requests from this address; try again in a minute",
            );
            error.status = 429;
            oauth_error(&error)
        })
}

/// `POST /_conduit/oauth/register` (RFC 7591).
async fn register_client(
    State(services): State<Arc<Services>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    if let Some(refusal) = limited(&services, &addr) {
        return refusal;
    }
    let Ok(body) = serde_json::from_slice::<JsonValue>(&body) else {
        return oauth_error(&OAuthError::new(
            "invalid_client_metadata",
            "the body must be JSON client metadata",
        ));
    };
    match services.oauth_register_client(&body) {
        Ok(registered) => oauth_json(StatusCode::CREATED, &registered),
        Err(e) => oauth_error(&e),
    }
}

/// A form body; a parameter given twice is an error (RFC 6749 §3.2).
fn form_fields(body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let mut fields = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(body) {
        if fields
            .insert(key.clone().into_owned(), value.into_owned())
            .is_some()
        {
            return Err(OAuthError::new(
                "invalid_request",
                format!("{key} is given more than once"),
            ));
        }
    }
    Ok(fields)
}

/// `POST /_conduit/oauth/token`.
async fn token(State(services): State<Arc<Services>>, body: Bytes) -> Response {
    let answer = match form_fields(&body) {
        Ok(form) => services.oauth_token(&form).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(tokens) => oauth_json(StatusCode::OK, &tokens),
        Err(e) => oauth_error(&e),
    }
}

/// `POST /_conduit/oauth/revoke` (RFC 7009): `200` with no body, whether
/// or not the token was still valid.
async fn revoke(State(services): State<Arc<Services>>, body: Bytes) -> Response {
    let form = match form_fields(&body) {
        Ok(form) => form,
        Err(e) => return oauth_error(&e),
    };
    let Some(token) = form.get("token").filter(|t| !t.is_empty()) else {
        return oauth_error(&OAuthError::new("invalid_request", "token is missing"));
    };
    match services.oauth_revoke(token).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => oauth_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubled_form_fields_are_refused() {
        let form = form_fields(b"grant_type=authorization_code&code=a%2Bb").unwrap();
        assert_eq!(form["code"], "a+b");
        assert_eq!(
            form_fields(b"code=a&code=b").unwrap_err().error,
            "invalid_request"
        );
    }
}
