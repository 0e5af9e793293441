//! `/version`, the queries other servers make of our users and aliases,
//! and `/openid/userinfo` (asked by anyone holding an OpenID token).

use std::sync::Arc;

use axum::{Json, extract::State};
use conduit_service::{Error, Services};
use ruma::UserId;
use serde_json::{Value as JsonValue, json};

use super::{Federated, require_federation};
use crate::error::ApiError;

/// `GET /_matrix/federation/v1/version` (no authentication).
pub async fn version(State(services): State<Arc<Services>>) -> Result<Json<JsonValue>, ApiError> {
    require_federation(&services)?;
    Ok(Json(json!({
        "server": { "name": "conduit", "version": env!("CARGO_PKG_VERSION") }
    })))
}

/// `GET /query/profile?user_id=&field=`.
pub async fn profile(
    State(services): State<Arc<Services>>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    let user = request.query_value("user_id").ok_or_else(|| {
        Error::new(
            conduit_service::ErrorCode::MissingParam,
            "user_id is missing.",
        )
    })?;
    let user = <&UserId>::try_from(user).map_err(|_| Error::invalid_param("Invalid user id."))?;
    let field = request.query_value("field");
    if field.is_some_and(|f| f != "displayname" && f != "avatar_url") {
        return Err(Error::invalid_param("Unknown profile field.").into());
    }
    Ok(Json(services.profile_for_server(user, field)?))
}

/// `GET /query/directory?room_alias=`.
pub async fn directory(
    State(services): State<Arc<Services>>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    let alias = request.query_value("room_alias").ok_or_else(|| {
        Error::new(
            conduit_service::ErrorCode::MissingParam,
            "room_alias is missing.",
        )
    })?;
    Ok(Json(services.directory_for_server(alias)?))
}

#[derive(serde::Deserialize)]
pub struct UserinfoQuery {
    access_token: Option<String>,
}

/// `GET /openid/userinfo?access_token=`: whose an OpenID token is. No
/// `X-Matrix` here: the asker is a third party holding the token.
pub async fn openid_userinfo(
    State(services): State<Arc<Services>>,
    axum::extract::Query(query): axum::extract::Query<UserinfoQuery>,
) -> Result<Json<JsonValue>, ApiError> {
    require_federation(&services)?;
    let token = query.access_token.ok_or_else(|| {
        Error::new(
            conduit_service::ErrorCode::MissingToken,
            "access_token is missing.",
        )
    })?;
    Ok(Json(json!({ "sub": services.openid_user(&token)? })))
}
