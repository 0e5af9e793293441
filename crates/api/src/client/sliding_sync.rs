//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`:
//! simplified sliding sync (MSC4186), see `conduit_service::sliding_sync`.
//! `pos` and `timeout` (milliseconds) come in the query, the rest as JSON.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    body::Body,
    extract::{RawQuery, State},
};
use conduit_service::{
    Error, ErrorCode, Services,
    sliding_sync::{SlidingSyncBody, SlidingSyncRequest},
};
use serde_json::Value as JsonValue;

use crate::{error::ApiError, ruma_wrapper::Authenticated};

/// The longest a request waits, whatever the client asks.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn sliding_sync(
    State(services): State<Arc<Services>>,
    RawQuery(query): RawQuery,
    Authenticated(session): Authenticated,
    body: Body,
) -> Result<Json<JsonValue>, ApiError> {
    let mut pos = None;
    let mut timeout = Duration::ZERO;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*key {
            "pos" => pos = Some(value.into_owned()),
            "timeout" => {
                let millis: u64 = value
                    .parse()
                    .map_err(|_| Error::invalid_param(format!("Invalid timeout {value:?}.")))?;
                timeout = Duration::from_millis(millis).min(MAX_TIMEOUT);
            }
            _ => {}
        }
    }
    let (_, json) =
        crate::ruma_wrapper::read_json_body(body, services.config.max_request_size as usize)
            .await?;
    let json = json.ok_or_else(|| Error::new(ErrorCode::NotJson, "The body is empty."))?;
    let body: SlidingSyncBody = serde_json::from_value(json).map_err(|e| {
        let message = e.to_string();
        let code = if message.starts_with("missing field") {
            ErrorCode::MissingParam
        } else {
            ErrorCode::BadJson
        };
        Error::new(code, message)
    })?;
    let request = SlidingSyncRequest {
        device_id: &session.device_id,
        pos: pos.as_deref(),
        timeout,
        body,
    };
    Ok(Json(
        services.sliding_sync(&session.user_id, request).await?,
    ))
}
