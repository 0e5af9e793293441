//! `GET/POST /_matrix/federation/v1/publicRooms`: this server's room
//! directory for other servers (their users' `/publicRooms?server=`), and
//! `GET /hierarchy/{roomId}`: a space's rooms.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
};
use conduit_service::{Error, Services, rooms::directory::DirectoryQuery};
use serde_json::Value as JsonValue;

use super::Federated;
use crate::client::directory::since;
use crate::error::ApiError;

/// `allow_public_rooms_over_federation = false` (the default) keeps the
/// directory to this server's own users.
fn require_open_directory(services: &Services) -> Result<(), ApiError> {
    if services.config.allow_public_rooms_over_federation {
        Ok(())
    } else {
        Err(Error::forbidden("This server does not list its rooms over federation.").into())
    }
}

pub async fn get_public(
    State(services): State<Arc<Services>>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    require_open_directory(&services)?;
    let page = services.public_rooms(&DirectoryQuery {
        limit: request.query_value("limit").and_then(|l| l.parse().ok()),
        since: since(request.query_value("since"))?,
        ..DirectoryQuery::default()
    })?;
    Ok(Json(page.into_json()))
}

pub async fn post_public(
    State(services): State<Arc<Services>>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    require_open_directory(&services)?;
    let body = request.json()?;
    let filter = body.get("filter");
    let room_types = filter
        .and_then(|f| f.get("room_types"))
        .and_then(JsonValue::as_array)
        .filter(|types| !types.is_empty())
        .map(|types| {
            types
                .iter()
                .map(|t| t.as_str().map(str::to_owned))
                .collect()
        });
    let page = services.public_rooms(&DirectoryQuery {
        search: filter
            .and_then(|f| f.get("generic_search_term"))
            .and_then(JsonValue::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned),
        room_types,
        limit: body
            .get("limit")
            .and_then(JsonValue::as_u64)
            .map(|l| l as usize),
        since: since(body.get("since").and_then(JsonValue::as_str))?,
    })?;
    Ok(Json(page.into_json()))
}

pub async fn hierarchy(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<String>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    let suggested_only = request.query_value("suggested_only") == Some("true");
    Ok(Json(services.hierarchy_for_server(
        &request.origin,
        &room_id,
        suggested_only,
    )?))
}
