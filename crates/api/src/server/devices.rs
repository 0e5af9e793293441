//! Devices and their end-to-end keys, as other servers ask for them:
//! `GET /user/devices/{userId}`, `POST /user/keys/query`,
//! `POST /user/keys/claim`. Only this server's users are answered for.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
};
use conduit_service::{Error, Services, e2ee::remote::DEFAULT_TIMEOUT};
use ruma::UserId;
use serde_json::{Map, Value as JsonValue};

use super::Federated;
use crate::error::ApiError;

/// A local user of this server, or `404`.
fn local_user<'a>(services: &Services, user_id: &'a str) -> Result<&'a UserId, ApiError> {
    match <&UserId>::try_from(user_id) {
        Ok(user)
            if user.server_name() == services.config.server_name
                && services.users.exists(user)? =>
        {
            Ok(user)
        }
        _ => Err(Error::not_found("No such user on this server.").into()),
    }
}

/// `{user: ...}` of a request body, keeping only this server's users.
fn local_users(services: &Services, body: &JsonValue, field: &str) -> Map<String, JsonValue> {
    body.get(field)
        .and_then(JsonValue::as_object)
        .into_iter()
        .flatten()
        .filter(|(user, _)| local_user(services, user).is_ok())
        .map(|(user, value)| (user.clone(), value.clone()))
        .collect()
}

pub async fn user_devices(
    State(services): State<Arc<Services>>,
    Path(user_id): Path<String>,
    _request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    let user = local_user(&services, &user_id)?;
    Ok(Json(services.device_list_for_server(user)?))
}

pub async fn keys_query(
    State(services): State<Arc<Services>>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    let wanted = local_users(&services, request.json()?, "device_keys");
    let mut answer = services.query_keys(None, &wanted, DEFAULT_TIMEOUT).await?;
    // Other servers never see a user-signing key.
    answer.remove("user_signing_keys");
    Ok(Json(answer.into()))
}

pub async fn keys_claim(
    State(services): State<Arc<Services>>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    let wanted = local_users(&services, request.json()?, "one_time_keys");
    let mut answer = services.claim_keys(&wanted, DEFAULT_TIMEOUT, false).await?;
    if let Some(map) = answer.as_object_mut() {
        map.remove("failures");
    }
    Ok(Json(answer))
}
