//! Joins, leaves, knocks and invites of other servers' users: `make_join`,
//! `send_join` (v1 and v2), `make_leave`, `send_leave`, `make_knock`,
//! `send_knock`, `invite` (v2).

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

fn user(user_id: &str) -> Result<&UserId, ApiError> {
    <&UserId>::try_from(user_id).map_err(|_| Error::invalid_param("Invalid user id.").into())
}

pub async fn make_join(
    State(services): State<Arc<Services>>,
    Path((room_id, user_id)): Path<(String, String)>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    let versions = request.query_values("ver");
    Ok(Json(services.make_join(
        &request.origin,
        &room_id,
        user(&user_id)?,
        &versions,
    )?))
}

pub async fn send_join_v2(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(String, String)>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    Ok(Json(
        services
            .send_join(&request.origin, &room_id, &event_id, request.json()?)
            .await?,
    ))
}

/// v1 answers `[200, {...}]`, a relic older servers still expect.
pub async fn send_join_v1(
    state: State<Arc<Services>>,
    path: Path<(String, String)>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    let Json(answer) = send_join_v2(state, path, request).await?;
    Ok(Json(json!([200, answer])))
}

pub async fn make_leave(
    State(services): State<Arc<Services>>,
    Path((room_id, user_id)): Path<(String, String)>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    Ok(Json(services.make_leave(
        &request.origin,
        &room_id,
        user(&user_id)?,
    )?))
}

pub async fn send_leave_v2(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(String, String)>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    Ok(Json(
        services
            .send_leave(&request.origin, &room_id, &event_id, request.json()?)
            .await?,
    ))
}

pub async fn send_leave_v1(
    state: State<Arc<Services>>,
    path: Path<(String, String)>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    let Json(answer) = send_leave_v2(state, path, request).await?;
    Ok(Json(json!([200, answer])))
}

pub async fn invite_v2(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(String, String)>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    Ok(Json(
        services
            .receive_invite(&request.origin, &room_id, &event_id, request.json()?)
            .await?,
    ))
}

pub async fn make_knock(
    State(services): State<Arc<Services>>,
    Path((room_id, user_id)): Path<(String, String)>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    let versions = request.query_values("ver");
    Ok(Json(services.make_knock(
        &request.origin,
        &room_id,
        user(&user_id)?,
        &versions,
    )?))
}

pub async fn send_knock(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(String, String)>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    Ok(Json(
        services
            .send_knock(&request.origin, &room_id, &event_id, request.json()?)
            .await?,
    ))
}
