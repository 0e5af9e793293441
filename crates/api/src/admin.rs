//! The Synapse-compatible admin API (`/_synapse/admin/...`), for server
//! admins only: registration tokens with Synapse's JSON shapes, status
//! codes and errors, the media endpoints synapse-admin uses (a user's
//! uploads, media info, quarantine, delete), plus the two endpoints admin
//! tools call to log in (`server_version`, `v2/users/{user}`).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{FromRequestParts, Path, Query, State},
    routing::get,
};
use bytes::Bytes;
use conduit_service::{
    Error, ErrorCode, Services,
    registration_tokens::{NewToken, TokenUpdate, TokenView},
    users::devices::Session,
    utils,
};
use http::request::Parts;
use ruma::{UserId, api::auth_scheme};
use serde_json::{Map, Value as JsonValue, json};

use crate::error::ApiError;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v1/server_version", get(server_version))
        .route("/_synapse/admin/v2/users/{user_id}", get(user))
        .route("/_synapse/admin/v1/registration_tokens", get(list_tokens))
        .route(
            "/_synapse/admin/v1/registration_tokens/new",
            axum::routing::post(new_token),
        )
        .route(
            "/_synapse/admin/v1/registration_tokens/{token}",
            get(get_token).put(update_token).delete(delete_token),
        )
        .route("/_synapse/admin/v1/users/{user_id}/media", get(user_media))
        .route(
            "/_synapse/admin/v1/media/{server}/{media_id}",
            get(media_info).delete(delete_media),
        )
        .route(
            "/_synapse/admin/v1/media/quarantine/{server}/{media_id}",
            axum::routing::post(quarantine_media),
        )
        .route(
            "/_synapse/admin/v1/media/unquarantine/{server}/{media_id}",
            axum::routing::post(unquarantine_media),
        )
}

/// Media in Synapse's admin shape.
fn media_json(media_id: &str, record: &conduit_service::media::MediaRecord) -> JsonValue {
    json!({
        "media_id": media_id,
        "media_type": record.content_type,
        "media_length": record.size,
        "upload_name": record.file_name,
        "created_ts": record.created_at,
        "last_access_ts": null,
        "quarantined_by": record.quarantined_by,
        "safe_from_quarantine": false,
        "user_id": record.uploader,
    })
}

/// `GET /_synapse/admin/v1/users/{user}/media?from=&limit=` (newest first).
async fn user_media(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(user_id): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<JsonValue>, ApiError> {
    let user_id = UserId::parse(&user_id)
        .map_err(|_| Error::invalid_param(format!("Invalid user id {user_id}")))?;
    if user_id.server_name() != services.config.server_name {
        return Err(Error::invalid_param("Can only look up local users").into());
    }
    let number = |key: &str, default: usize| -> Result<usize, ApiError> {
        match query.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                Error::invalid_param(format!(
                    "Query parameter {key} must be a non-negative integer."
                ))
                .into()
            }),
        }
    };
    let (from, limit) = (number("from", 0)?, number("limit", 100)?);
    let (media, total) = services.user_media(&user_id, from, limit)?;
    let mut answer = json!({
        "media": media.iter().map(|m| media_json(&m.media_id, &m.record)).collect::<Vec<_>>(),
        "total": total,
    });
    if from + media.len() < total {
        answer["next_token"] = (from + media.len()).into();
    }
    Ok(Json(answer))
}

async fn media_info(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path((server, media_id)): Path<(String, String)>,
) -> Result<Json<JsonValue>, ApiError> {
    let record = services.media_record(&server, &media_id)?;
    Ok(Json(
        json!({ "media_info": media_json(&media_id, &record) }),
    ))
}

async fn delete_media(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path((server, media_id)): Path<(String, String)>,
) -> Result<Json<JsonValue>, ApiError> {
    if server != services.config.server_name.as_str() {
        return Err(Error::invalid_param("Can only delete local media").into());
    }
    services.delete_media(&server, &media_id)?;
    Ok(Json(json!({ "deleted_media": [media_id], "total": 1 })))
}

async fn quarantine_media(
    State(services): State<Arc<Services>>,
    Admin(session): Admin,
    Path((server, media_id)): Path<(String, String)>,
) -> Result<Json<JsonValue>, ApiError> {
    services.set_media_quarantine(&server, &media_id, Some(session.user_id.as_str()))?;
    Ok(Json(json!({})))
}

async fn unquarantine_media(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path((server, media_id)): Path<(String, String)>,
) -> Result<Json<JsonValue>, ApiError> {
    services.set_media_quarantine(&server, &media_id, None)?;
    Ok(Json(json!({})))
}

/// A request by a server admin: `401` without a valid token, `403` for
/// everyone else.
pub struct Admin(pub Session);

impl FromRequestParts<Arc<Services>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        services: &Arc<Services>,
    ) -> Result<Self, ApiError> {
        let request = http::Request::from_parts(parts.clone(), ());
        let token = auth_scheme::extract_bearer_or_query_token(&request)
            .ok()
            .flatten()
            .ok_or_else(|| Error::new(ErrorCode::MissingToken, "Missing access token."))?;
        let session = services.devices.authenticate(&token)?;
        let is_admin = services
            .users
            .account(&session.user_id)?
            .is_some_and(|a| a.is_admin && !a.deactivated);
        if !is_admin {
            return Err(Error::forbidden("You are not a server admin").into());
        }
        Ok(Self(session))
    }
}

/// A JSON object body, with Synapse's errors for anything else.
fn object(body: &Bytes) -> Result<Map<String, JsonValue>, ApiError> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    match serde_json::from_slice::<JsonValue>(body) {
        Ok(JsonValue::Object(map)) => Ok(map),
        Ok(_) => Err(Error::bad_json("Content must be a JSON object.").into()),
        Err(_) => Err(Error::new(ErrorCode::NotJson, "Content not JSON.").into()),
    }
}

/// An optional non-negative integer field: absent, `null`, or a number.
fn optional_count(
    body: &Map<String, JsonValue>,
    key: &str,
    what: &str,
) -> Result<Option<Option<u64>>, ApiError> {
    match body.get(key) {
        None => Ok(None),
        Some(JsonValue::Null) => Ok(Some(None)),
        Some(value) => value
            .as_u64()
            .map(|v| Some(Some(v)))
            .ok_or_else(|| Error::invalid_param(what).into()),
    }
}

fn token_json(view: &TokenView) -> JsonValue {
    json!({
        "token": view.record.token,
        "uses_allowed": view.record.uses_allowed,
        "pending": view.pending,
        "completed": view.record.completed,
        "expiry_time": view.record.expiry_time,
    })
}

/// Open to anyone, as Synapse's is: tools ask before logging in.
async fn server_version() -> Json<JsonValue> {
    Json(json!({ "server_version": env!("CARGO_PKG_VERSION") }))
}

async fn user(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(user_id): Path<String>,
) -> Result<Json<JsonValue>, ApiError> {
    let user_id = UserId::parse(&user_id)
        .map_err(|_| Error::invalid_param(format!("Invalid user id {user_id}")))?;
    if user_id.server_name() != services.config.server_name {
        return Err(Error::invalid_param("Can only look up local users").into());
    }
    let account = services
        .users
        .account(&user_id)?
        .ok_or_else(|| Error::not_found("User not found"))?;
    let field = |name: &str| services.users.profile_field(&user_id, name);
    let external_ids: Vec<JsonValue> = services
        .sso_identities_of(&user_id)?
        .into_iter()
        .map(|(provider, subject)| json!({"auth_provider": provider, "external_id": subject}))
        .collect();
    Ok(Json(json!({
        "name": user_id,
        "displayname": field("displayname")?,
        "avatar_url": field("avatar_url")?,
        "admin": account.is_admin,
        "deactivated": account.deactivated,
        "is_guest": account.is_guest,
        "locked": false,
        "shadow_banned": false,
        "creation_ts": account.created_at / 1000,
        "user_type": null,
        "appservice_id": account.appservice_id,
        "threepids": [],
        "external_ids": external_ids,
    })))
}

async fn list_tokens(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<JsonValue>, ApiError> {
    let valid = match query.get("valid").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            return Err(Error::invalid_param(
                "Boolean query parameter \"valid\" must be one of ['true', 'false']",
            )
            .into());
        }
    };
    let now = utils::now_ms();
    let tokens: Vec<JsonValue> = services
        .registration_tokens
        .list()?
        .iter()
        .filter(|view| valid.is_none_or(|v| view.is_valid(now) == v))
        .map(token_json)
        .collect();
    Ok(Json(json!({ "registration_tokens": tokens })))
}

async fn new_token(
    State(services): State<Arc<Services>>,
    Admin(admin): Admin,
    body: Bytes,
) -> Result<Json<JsonValue>, ApiError> {
    let body = object(&body)?;
    let token = match body.get("token") {
        None => None,
        Some(JsonValue::String(token)) => Some(token.clone()),
        Some(_) => return Err(Error::invalid_param("token must be a string").into()),
    };
    let length = match body.get("length") {
        None => None,
        Some(value) => Some(
            value
                .as_u64()
                .and_then(|l| usize::try_from(l).ok())
                .ok_or_else(|| {
                    Error::invalid_param("length must be an integer between 1 and 64")
                })?,
        ),
    };
    let uses_allowed = optional_count(
        &body,
        "uses_allowed",
        "uses_allowed must be a non-negative integer or null",
    )?;
    let expiry_time = optional_count(
        &body,
        "expiry_time",
        "expiry_time must be an integer or null",
    )?;
    let view = services.registration_tokens.create(NewToken {
        token,
        length,
        uses_allowed: uses_allowed.flatten(),
        expiry_time: expiry_time.flatten(),
        created_by: Some(admin.user_id.to_string()),
        ..NewToken::default()
    })?;
    Ok(Json(token_json(&view)))
}

async fn get_token(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(token): Path<String>,
) -> Result<Json<JsonValue>, ApiError> {
    let view = services
        .registration_tokens
        .get(&token)?
        .ok_or_else(|| Error::not_found(format!("No such registration token: {token}")))?;
    Ok(Json(token_json(&view)))
}

async fn update_token(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(token): Path<String>,
    body: Bytes,
) -> Result<Json<JsonValue>, ApiError> {
    let body = object(&body)?;
    let view = services.registration_tokens.update(
        &token,
        TokenUpdate {
            uses_allowed: optional_count(
                &body,
                "uses_allowed",
                "uses_allowed must be a non-negative integer or null",
            )?,
            expiry_time: optional_count(
                &body,
                "expiry_time",
                "expiry_time must be an integer or null",
            )?,
            ..TokenUpdate::default()
        },
    )?;
    Ok(Json(token_json(&view)))
}

async fn delete_token(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(token): Path<String>,
) -> Result<Json<JsonValue>, ApiError> {
    services.registration_tokens.delete(&token)?;
    Ok(Json(json!({})))
}
