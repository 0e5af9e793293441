//! `POST /_matrix/client/v1/appservice/{appserviceId}/ping`: an appservice
//! checks that this server reaches it; and `/thirdparty/*`, answered by
//! the appservices that bridge each protocol.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
    http::Uri,
};
use conduit_service::{Error, ErrorCode, Services};
use ruma::api::client::appservice::request_ping;
use serde_json::Value as JsonValue;

use crate::{Ruma, RumaResponse, error::ApiError, ruma_wrapper::Authenticated};

pub async fn ping(
    State(services): State<Arc<Services>>,
    req: Ruma<request_ping::v1::Request>,
) -> Result<RumaResponse<request_ping::v1::Response>, ApiError> {
    let Some(appservice) = req.sender()?.appservice.as_deref() else {
        return Err(Error::new(
            ErrorCode::Forbidden,
            "Only an application service may ping.",
        )
        .into());
    };
    let took_ms = services
        .ping_appservice(
            appservice,
            &req.body.appservice_id,
            req.body.transaction_id.as_deref().map(|t| t.as_str()),
        )
        .await?;
    Ok(RumaResponse(request_ping::v1::Response::new(
        std::time::Duration::from_millis(took_ms),
    )))
}

/// `GET /thirdparty/protocols`.
pub async fn thirdparty_protocols(
    State(services): State<Arc<Services>>,
    _: Authenticated,
) -> Json<JsonValue> {
    Json(JsonValue::Object(services.thirdparty_protocols().await))
}

/// `GET /thirdparty/protocol/{protocol}`.
pub async fn thirdparty_protocol(
    State(services): State<Arc<Services>>,
    _: Authenticated,
    Path(protocol): Path<String>,
) -> Result<Json<JsonValue>, ApiError> {
    Ok(Json(services.thirdparty_protocol(&protocol).await?))
}

/// `GET /thirdparty/location/{protocol}` and `/thirdparty/user/{protocol}`:
/// the query's fields are passed on as they are.
pub async fn thirdparty_by_protocol(
    State(services): State<Arc<Services>>,
    _: Authenticated,
    Path((kind, protocol)): Path<(String, String)>,
    uri: Uri,
) -> Result<Json<JsonValue>, ApiError> {
    lookup_kind(&kind)?;
    let found = services
        .thirdparty_lookup(&kind, Some(&protocol), uri.query())
        .await?;
    Ok(Json(JsonValue::Array(found)))
}

/// `GET /thirdparty/location?alias=` and `/thirdparty/user?userid=`.
pub async fn thirdparty_reverse(
    State(services): State<Arc<Services>>,
    _: Authenticated,
    Path(kind): Path<String>,
    uri: Uri,
) -> Result<Json<JsonValue>, ApiError> {
    let wanted = match lookup_kind(&kind)? {
        "location" => "alias",
        _ => "userid",
    };
    let has = uri
        .query()
        .is_some_and(|q| url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == wanted));
    if !has {
        return Err(Error::new(
            ErrorCode::MissingParam,
            format!("The {wanted} parameter is missing."),
        )
        .into());
    }
    let found = services.thirdparty_lookup(&kind, None, uri.query()).await?;
    Ok(Json(JsonValue::Array(found)))
}

/// The two kinds of lookup; any other path is no endpoint.
fn lookup_kind(kind: &str) -> Result<&str, ApiError> {
    match kind {
        "location" | "user" => Ok(kind),
        _ => Err(Error::new(ErrorCode::Unrecognized, "Unrecognized request.").into()),
    }
}
