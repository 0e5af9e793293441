//! `GET /_matrix/key/v2/server`: our signing key, signed by itself.

use std::sync::Arc;

use axum::{Json, extract::State};
use conduit_service::Services;
use serde_json::Value as JsonValue;

use crate::error::ApiError;

pub async fn server_key(
    State(services): State<Arc<Services>>,
) -> Result<Json<JsonValue>, ApiError> {
    Ok(Json(services.server_keys.key_response()?))
}
