//! `PUT /_matrix/federation/v1/send/{txnId}`: a transaction of PDUs and EDUs.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
};
use conduit_service::{Error, Services};
use serde_json::Value as JsonValue;

use super::Federated;
use crate::error::ApiError;

pub async fn send(
    State(services): State<Arc<Services>>,
    Path(txn_id): Path<String>,
    request: Federated,
) -> Result<Json<JsonValue>, ApiError> {
    let body = request.json()?;
    if body.get("origin").and_then(JsonValue::as_str) != Some(request.origin.as_str()) {
        return Err(Error::bad_json("The transaction's origin is not the sending server.").into());
    }
    Ok(Json(
        services
            .receive_transaction(&request.origin, &txn_id, body)
            .await?,
    ))
}
