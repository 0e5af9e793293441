//! Pushers and the notification history: `GET /pushers`,
//! `POST /pushers/set`, `GET /notifications`.

use std::sync::Arc;

use axum::{Json, extract::State};
use conduit_service::{
    Error, Services,
    push::history::{DEFAULT_LIMIT, MAX_LIMIT},
};
use ruma::api::client::push::{get_notifications, get_pushers};
use serde_json::{Value as JsonValue, json};

use crate::{
    Ruma,
    error::ApiError,
    ruma_wrapper::{Authenticated, read_json_body},
};

pub async fn list(
    State(services): State<Arc<Services>>,
    req: Ruma<get_pushers::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let pushers = services.pushers_of(&req.sender()?.user_id);
    Ok(Json(json!({ "pushers": pushers })))
}

/// Read by hand rather than through ruma's type: a missing field is
/// `M_MISSING_PARAM` naming it, as Synapse answers, and `data` is kept
/// exactly as sent.
pub async fn set(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    request: axum::extract::Request,
) -> Result<Json<JsonValue>, ApiError> {
    let (_, json) = read_json_body(
        request.into_body(),
        services.config.max_request_size as usize,
    )
    .await?;
    let body = json
        .as_ref()
        .and_then(JsonValue::as_object)
        .ok_or_else(|| Error::bad_json("The body must be a JSON object."))?;
    services.set_pusher(&session.user_id, Some(session.device_id.as_str()), body)?;
    Ok(Json(json!({})))
}

pub async fn notifications(
    State(services): State<Arc<Services>>,
    req: Ruma<get_notifications::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    let body = &req.body;
    let limit = body.limit.map_or(DEFAULT_LIMIT, |l| {
        u64::from(l).min(MAX_LIMIT as u64) as usize
    });
    let page = services.notifications_page(
        &sender.user_id,
        body.from.as_deref(),
        limit,
        body.only.as_deref() == Some("highlight"),
    )?;
    let mut answer = json!({ "notifications": page.notifications });
    if let Some(token) = page.next_token {
        answer["next_token"] = token.into();
    }
    Ok(Json(answer))
}
