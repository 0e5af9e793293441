//! Dehydrated devices (MSC3814, `unstable/org.matrix.msc3814.v1`).

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, Query, State},
};
use conduit_service::{
    Error, Services,
    e2ee::{dehydrated::NewDehydratedDevice, keys::KeyUpload},
};
use ruma::api::client::dehydrated_device as endpoints;
use serde_json::{Value as JsonValue, json};

use super::keys::{body_object, object_field};
use crate::{Ruma, error::ApiError, ruma_wrapper::Authenticated};

pub async fn put(
    State(services): State<Arc<Services>>,
    req: Ruma<endpoints::put_dehydrated_device::unstable::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    let body = body_object(&req);
    let device_id = body
        .get("device_id")
        .and_then(JsonValue::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| Error::bad_json("device_id is required."))?;
    let device_data = body
        .get("device_data")
        .filter(|d| d.is_object())
        .ok_or_else(|| Error::bad_json("device_data must be an object."))?;
    let device = NewDehydratedDevice {
        device_id: device_id.to_owned(),
        device_data: device_data.clone(),
        display_name: body
            .get("initial_device_display_name")
            .and_then(JsonValue::as_str)
            .map(str::to_owned),
        keys: KeyUpload {
            device_keys: body.get("device_keys").filter(|k| !k.is_null()).cloned(),
            one_time_keys: object_field(&body, "one_time_keys")?,
            fallback_keys: object_field(&body, "fallback_keys")?,
        },
    };
    let device_id = services
        .put_dehydrated_device(&sender.user_id, device)
        .await?;
    Ok(Json(json!({ "device_id": device_id })))
}

pub async fn get(
    State(services): State<Arc<Services>>,
    req: Ruma<endpoints::get_dehydrated_device::unstable::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let device = services
        .dehydrated_device(&req.sender()?.user_id)?
        .ok_or_else(|| Error::not_found("No dehydrated device."))?;
    Ok(Json(
        json!({ "device_id": device.device_id, "device_data": device.device_data }),
    ))
}

pub async fn delete(
    State(services): State<Arc<Services>>,
    req: Ruma<endpoints::delete_dehydrated_device::unstable::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let device_id = services
        .delete_dehydrated_device(&req.sender()?.user_id)
        .await?;
    Ok(Json(json!({ "device_id": device_id })))
}

pub async fn events(
    State(services): State<Arc<Services>>,
    req: Ruma<endpoints::get_events::unstable::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    Ok(Json(services.dehydrated_device_events(
        &sender.user_id,
        req.body.device_id.as_str(),
        req.body.next_batch.as_deref(),
    )?))
}

/// The paging of `GET .../{deviceId}/events` (matrix-js-sdk's form of the
/// same endpoint): `from` is the previous answer's `next_batch`.
#[derive(serde::Deserialize)]
pub struct EventsQuery {
    from: Option<String>,
}

pub async fn events_get(
    State(services): State<Arc<Services>>,
    Path(device_id): Path<String>,
    Query(query): Query<EventsQuery>,
    Authenticated(session): Authenticated,
) -> Result<Json<JsonValue>, ApiError> {
    Ok(Json(services.dehydrated_device_events(
        &session.user_id,
        &device_id,
        query.from.as_deref(),
    )?))
}
