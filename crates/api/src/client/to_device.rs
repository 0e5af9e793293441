//! `PUT /sendToDevice/{eventType}/{txnId}`.

use std::sync::Arc;

use axum::{Json, extract::State};
use conduit_service::Services;
use ruma::api::client::to_device::send_event_to_device;
use serde_json::{Value as JsonValue, json};

use super::keys::{body_object, object_field};
use crate::{Ruma, error::ApiError};

pub async fn send(
    State(services): State<Arc<Services>>,
    req: Ruma<send_event_to_device::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    let messages = object_field(&body_object(&req), "messages")?;
    services.send_to_device(
        &sender.user_id,
        sender.device_id.as_str(),
        &req.body.event_type.to_string(),
        req.body.txn_id.as_str(),
        &messages,
    )?;
    Ok(Json(json!({})))
}
