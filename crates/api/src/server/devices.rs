//! Devices and their end-to-end keys, as other servers ask for them:
//! `GET /user/devices/{userId}`, `POST /user/keys/query`,
//! `POST /user/keys/claim`. This server keeps no device keys yet (that is
//! end-to-end encryption's part), so it lists no device with keys and
//! claims no key: an empty answer, which is the honest one.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
};
use conduit_service::{Error, Services};
use ruma::UserId;
use serde_json::{Value as JsonValue, json};

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

pub async fn user_devices(
    State(services): State<Arc<Services>>,
    Path(user_id): Path<String>,
    _request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    let user = local_user(&services, &user_id)?;
    Ok(Json(
        json!({ "user_id": user, "stream_id": 0, "devices": [] }),
    ))
}

pub async fn keys_query(
    State(services): State<Arc<Services>>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    let mut device_keys = serde_json::Map::new();
    if let Some(users) = request
        .json()?
        .get("device_keys")
        .and_then(JsonValue::as_object)
    {
        for user in users.keys() {
            if local_user(&services, user).is_ok() {
                device_keys.insert(user.clone(), json!({}));
            }
        }
    }
    Ok(Json(json!({ "device_keys": device_keys })))
}

pub async fn keys_claim(
    State(_services): State<Arc<Services>>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    request.json()?;
    Ok(Json(json!({ "one_time_keys": {} })))
}
