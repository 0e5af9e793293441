//! Events, state and history for other servers: `/event`, `/state`,
//! `/state_ids`, `/event_auth`, `/get_missing_events`, `/backfill`,
//! `/timestamp_to_event`.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
};
use conduit_service::{Error, ErrorCode, Services};
use serde_json::Value as JsonValue;

use super::Federated;
use crate::error::ApiError;

pub async fn event(
    State(services): State<Arc<Services>>,
    Path(event_id): Path<String>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    Ok(Json(services.event_for_server(&request.origin, &event_id)?))
}

fn event_id_param(request: &Federated) -> Result<&str, ApiError> {
    request
        .query_value("event_id")
        .ok_or_else(|| Error::new(ErrorCode::MissingParam, "event_id is missing.").into())
}

pub async fn state(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<String>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    let event_id = event_id_param(&request)?;
    Ok(Json(services.state_for_server(
        &request.origin,
        &room_id,
        event_id,
        false,
    )?))
}

pub async fn state_ids(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<String>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    let event_id = event_id_param(&request)?;
    Ok(Json(services.state_for_server(
        &request.origin,
        &room_id,
        event_id,
        true,
    )?))
}

pub async fn event_auth(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(String, String)>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    Ok(Json(services.event_auth_for_server(
        &request.origin,
        &room_id,
        &event_id,
    )?))
}

fn id_list(body: &JsonValue, key: &str) -> Vec<String> {
    body.get(key)
        .and_then(JsonValue::as_array)
        .map(|list| {
            list.iter()
                .filter_map(JsonValue::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

pub async fn get_missing_events(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<String>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    let body = request.json()?;
    let limit = body.get("limit").and_then(JsonValue::as_u64).unwrap_or(10) as usize;
    let min_depth = body
        .get("min_depth")
        .and_then(JsonValue::as_u64)
        .unwrap_or(0);
    Ok(Json(services.missing_events_for_server(
        &request.origin,
        &room_id,
        &id_list(body, "earliest_events"),
        &id_list(body, "latest_events"),
        limit,
        min_depth,
    )?))
}

pub async fn backfill(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<String>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    let from = request.query_values("v");
    if from.is_empty() {
        return Err(Error::new(ErrorCode::MissingParam, "v is missing.").into());
    }
    let limit = request
        .query_value("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10);
    Ok(Json(services.backfill_for_server(
        &request.origin,
        &room_id,
        &from,
        limit,
    )?))
}

pub async fn timestamp_to_event(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<String>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    let ts = request
        .query_value("ts")
        .ok_or_else(|| Error::new(ErrorCode::MissingParam, "ts is missing."))?
        .parse::<u64>()
        .map_err(|_| Error::invalid_param("ts must be a timestamp in milliseconds."))?;
    let forward = match request.query_value("dir") {
        Some("f") => true,
        Some("b") => false,
        _ => return Err(Error::invalid_param("dir must be f or b.").into()),
    };
    Ok(Json(services.timestamp_for_server(
        &request.origin,
        &room_id,
        ts,
        forward,
    )?))
}
