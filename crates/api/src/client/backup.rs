//! Server-side key backup: `/room_keys/version[/{version}]` and
//! `/room_keys/keys[/{roomId}[/{sessionId}]]`.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use conduit_service::{
    Error, ErrorCode, Services,
    e2ee::backup::{Scope, SessionKeys, nest_keys},
};
use ruma::{UserId, api::client::backup as endpoints};
use serde_json::{Map, Value as JsonValue, json};

use super::keys::{body_object, object_field};
use crate::{Ruma, error::ApiError};

/// `algorithm` and `auth_data` of a version body.
fn version_fields(body: &Map<String, JsonValue>) -> Result<(String, JsonValue), ApiError> {
    let algorithm = body
        .get("algorithm")
        .and_then(JsonValue::as_str)
        .ok_or_else(|| Error::bad_json("algorithm is required."))?;
    let auth_data = body
        .get("auth_data")
        .filter(|d| d.is_object())
        .ok_or_else(|| Error::bad_json("auth_data must be an object."))?;
    Ok((algorithm.to_owned(), auth_data.clone()))
}

pub async fn create_version(
    State(services): State<Arc<Services>>,
    req: Ruma<endpoints::create_backup_version::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    let (algorithm, auth_data) = version_fields(&body_object(&req))?;
    let version = services
        .create_backup(&sender.user_id, &algorithm, auth_data)
        .await?;
    Ok(Json(json!({ "version": version })))
}

pub async fn latest_version(
    State(services): State<Arc<Services>>,
    req: Ruma<endpoints::get_latest_backup_info::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    Ok(Json(services.backup_info(&req.sender()?.user_id, None)?))
}

pub async fn get_version(
    State(services): State<Arc<Services>>,
    req: Ruma<endpoints::get_backup_info::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    Ok(Json(
        services.backup_info(&sender.user_id, Some(&req.body.version))?,
    ))
}

pub async fn update_version(
    State(services): State<Arc<Services>>,
    req: Ruma<endpoints::update_backup_version::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    let body = body_object(&req);
    if let Some(version) = body.get("version")
        && version.as_str() != Some(req.body.version.as_str())
    {
        return Err(Error::invalid_param("The body's version is not the path's.").into());
    }
    let (algorithm, auth_data) = version_fields(&body)?;
    services
        .update_backup(&sender.user_id, &req.body.version, &algorithm, auth_data)
        .await?;
    Ok(Json(json!({})))
}

pub async fn delete_version(
    State(services): State<Arc<Services>>,
    req: Ruma<endpoints::delete_backup_version::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    services
        .delete_backup(&sender.user_id, &req.body.version)
        .await?;
    Ok(Json(json!({})))
}

/// `{sessions: {id: key}}` of one room, flattened.
fn room_sessions(room: &str, sessions: &JsonValue) -> Result<SessionKeys, ApiError> {
    let sessions = sessions
        .get("sessions")
        .and_then(JsonValue::as_object)
        .ok_or_else(|| Error::bad_json("sessions must be an object."))?;
    sessions
        .iter()
        .map(|(session, key)| {
            if key.is_object() {
                Ok((room.to_owned(), session.clone(), key.clone()))
            } else {
                Err(Error::bad_json("A backed-up key must be an object.").into())
            }
        })
        .collect()
}

/// Stores keys; a write to an old version says which one is current.
async fn put_keys(
    services: &Services,
    user_id: &UserId,
    version: &str,
    keys: SessionKeys,
) -> Response {
    match services.put_backup_keys(user_id, version, keys).await {
        Ok((etag, count)) => Json(json!({ "etag": etag, "count": count })).into_response(),
        Err(e) if e.code() == Some(ErrorCode::WrongRoomKeysVersion) => {
            let current = services
                .latest_backup(user_id)
                .ok()
                .flatten()
                .map(|(v, _)| v.to_string());
            let body = json!({
                "errcode": "M_WRONG_ROOM_KEYS_VERSION",
                "error": e.to_string(),
                "current_version": current,
            });
            (http::StatusCode::FORBIDDEN, Json(body)).into_response()
        }
        Err(e) => ApiError(e).into_response(),
    }
}

pub async fn put_all(
    State(services): State<Arc<Services>>,
    req: Ruma<endpoints::add_backup_keys::v3::Request>,
) -> Result<Response, ApiError> {
    let sender = req.sender()?;
    let mut keys = Vec::new();
    for (room, sessions) in object_field(&body_object(&req), "rooms")? {
        keys.extend(room_sessions(&room, &sessions)?);
    }
    Ok(put_keys(&services, &sender.user_id, &req.body.version, keys).await)
}

pub async fn put_room(
    State(services): State<Arc<Services>>,
    req: Ruma<endpoints::add_backup_keys_for_room::v3::Request>,
) -> Result<Response, ApiError> {
    let sender = req.sender()?;
    let body = JsonValue::Object(body_object(&req));
    let keys = room_sessions(req.body.room_id.as_str(), &body)?;
    Ok(put_keys(&services, &sender.user_id, &req.body.version, keys).await)
}

pub async fn put_session(
    State(services): State<Arc<Services>>,
    req: Ruma<endpoints::add_backup_keys_for_session::v3::Request>,
) -> Result<Response, ApiError> {
    let sender = req.sender()?;
    let key = JsonValue::Object(body_object(&req));
    let keys = vec![(
        req.body.room_id.to_string(),
        req.body.session_id.clone(),
        key,
    )];
    Ok(put_keys(&services, &sender.user_id, &req.body.version, keys).await)
}

pub async fn get_all(
    State(services): State<Arc<Services>>,
    req: Ruma<endpoints::get_backup_keys::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    let keys = services.backup_keys(&sender.user_id, &req.body.version, Scope::All)?;
    Ok(Json(nest_keys(keys)))
}

pub async fn get_room(
    State(services): State<Arc<Services>>,
    req: Ruma<endpoints::get_backup_keys_for_room::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    let room = req.body.room_id.as_str();
    let keys = services.backup_keys(&sender.user_id, &req.body.version, Scope::Room(room))?;
    let sessions: Map<String, JsonValue> = keys.into_iter().map(|(_, s, k)| (s, k)).collect();
    Ok(Json(json!({ "sessions": sessions })))
}

pub async fn get_session(
    State(services): State<Arc<Services>>,
    req: Ruma<endpoints::get_backup_keys_for_session::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    let scope = Scope::Session(req.body.room_id.as_str(), &req.body.session_id);
    let keys = services.backup_keys(&sender.user_id, &req.body.version, scope)?;
    let (_, _, key) = keys
        .into_iter()
        .next()
        .ok_or_else(|| Error::not_found("No key of that session is backed up."))?;
    Ok(Json(key))
}

async fn delete_keys(
    services: &Services,
    user_id: &UserId,
    version: &str,
    scope: Scope<'_>,
) -> Result<Json<JsonValue>, ApiError> {
    let (etag, count) = services.delete_backup_keys(user_id, version, scope).await?;
    Ok(Json(json!({ "etag": etag, "count": count })))
}

pub async fn delete_all(
    State(services): State<Arc<Services>>,
    req: Ruma<endpoints::delete_backup_keys::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    delete_keys(&services, &sender.user_id, &req.body.version, Scope::All).await
}

pub async fn delete_room(
    State(services): State<Arc<Services>>,
    req: Ruma<endpoints::delete_backup_keys_for_room::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    let scope = Scope::Room(req.body.room_id.as_str());
    delete_keys(&services, &sender.user_id, &req.body.version, scope).await
}

pub async fn delete_session(
    State(services): State<Arc<Services>>,
    req: Ruma<endpoints::delete_backup_keys_for_session::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    let scope = Scope::Session(req.body.room_id.as_str(), &req.body.session_id);
    delete_keys(&services, &sender.user_id, &req.body.version, scope).await
}
