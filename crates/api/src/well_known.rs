//! `/.well-known/matrix/{client,server}`: how clients and servers find us.

use std::sync::Arc;

use axum::{Json, extract::State};
use conduit_service::{Error, Services};
use serde_json::{Value as JsonValue, json};

use crate::error::ApiError;

pub async fn client(State(services): State<Arc<Services>>) -> Json<JsonValue> {
    Json(json!({ "m.homeserver": { "base_url": services.config.client_base_url() } }))
}

/// Only answered when configured: a made-up delegation would send other
/// servers to the wrong place, while a 404 lets them fall back to SRV/8448.
pub async fn server(State(services): State<Arc<Services>>) -> Result<Json<JsonValue>, ApiError> {
    match &services.config.well_known.server {
        Some(server) => Ok(Json(json!({ "m.server": server }))),
        None => Err(Error::not_found("No server delegation is configured.").into()),
    }
}
