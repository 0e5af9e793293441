//! End-to-end encryption keys: `/keys/upload`, `/keys/query`,
//! `/keys/claim`, `/keys/changes`, cross-signing uploads and signatures.
//! ruma routes and authenticates; the keys are read from the JSON body as
//! sent, so their signatures stay checkable byte for byte.

use std::{sync::Arc, time::Duration};

use axum::{Json, extract::State};
use conduit_service::{
    Error, Services,
    e2ee::{cross_signing::CrossSigningUpload, keys::KeyUpload, remote::DEFAULT_TIMEOUT},
};
use ruma::api::client::keys::{
    claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
};
use serde_json::{Map, Value as JsonValue, json};

use crate::{Ruma, error::ApiError};

/// The body as an object (`{}` when empty).
pub(super) fn body_object<T, const G: bool>(req: &Ruma<T, G>) -> Map<String, JsonValue> {
    req.json
        .as_ref()
        .and_then(JsonValue::as_object)
        .cloned()
        .unwrap_or_default()
}

/// A field that must be an object when present.
pub(super) fn object_field(
    body: &Map<String, JsonValue>,
    field: &str,
) -> Result<Map<String, JsonValue>, ApiError> {
    match body.get(field) {
        None | Some(JsonValue::Null) => Ok(Map::new()),
        Some(JsonValue::Object(map)) => Ok(map.clone()),
        Some(_) => Err(Error::bad_json(format!("{field} must be an object.")).into()),
    }
}

/// The client's `timeout` (ms), at most a minute.
fn timeout(body: &Map<String, JsonValue>) -> Duration {
    body.get("timeout")
        .and_then(JsonValue::as_u64)
        .map_or(DEFAULT_TIMEOUT, |ms| {
            Duration::from_millis(ms).min(Duration::from_secs(60))
        })
}

pub async fn upload(
    State(services): State<Arc<Services>>,
    req: Ruma<upload_keys::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    let body = body_object(&req);
    let upload = KeyUpload {
        device_keys: body.get("device_keys").filter(|k| !k.is_null()).cloned(),
        one_time_keys: object_field(&body, "one_time_keys")?,
        fallback_keys: object_field(&body, "fallback_keys")?,
    };
    let counts = services
        .upload_keys(&sender.user_id, &sender.device_id, upload)
        .await?;
    Ok(Json(json!({ "one_time_key_counts": counts })))
}

pub async fn query(
    State(services): State<Arc<Services>>,
    req: Ruma<get_keys::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    let body = body_object(&req);
    let wanted = object_field(&body, "device_keys")?;
    let answer = services
        .query_keys(Some(&sender.user_id), &wanted, timeout(&body))
        .await?;
    let mut answer = JsonValue::Object(answer);
    if answer.get("failures").is_none() {
        answer["failures"] = json!({});
    }
    Ok(Json(answer))
}

pub async fn claim(
    State(services): State<Arc<Services>>,
    req: Ruma<claim_keys::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    req.sender()?;
    let body = body_object(&req);
    let wanted = object_field(&body, "one_time_keys")?;
    Ok(Json(
        services.claim_keys(&wanted, timeout(&body), true).await?,
    ))
}

pub async fn changes(
    State(services): State<Arc<Services>>,
    req: Ruma<get_key_changes::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    let position = |token: &str| {
        token
            .parse::<u64>()
            .map_err(|_| ApiError(Error::invalid_param(format!("Invalid token {token:?}."))))
    };
    let from = position(&req.body.from)?;
    let to = position(&req.body.to)?;
    let news = services.device_list_news(&sender.user_id, from, to.max(from))?;
    Ok(Json(json!({ "changed": news.changed, "left": news.left })))
}

pub async fn upload_signing_keys(
    State(services): State<Arc<Services>>,
    req: Ruma<upload_signing_keys::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    let body = body_object(&req);
    let key = |field: &str| body.get(field).filter(|k| !k.is_null()).cloned();
    let upload = CrossSigningUpload {
        master_key: key("master_key"),
        self_signing_key: key("self_signing_key"),
        user_signing_key: key("user_signing_key"),
    };
    let passed = if services.cross_signing_upload_replaces(&sender.user_id, &upload)? {
        Some(
            services
                .reauthenticate(
                    Some(sender),
                    req.body.auth.as_ref(),
                    req.json.as_ref(),
                    "replace your cross-signing keys",
                )
                .await?,
        )
    } else {
        None
    };
    services
        .upload_cross_signing_keys(&sender.user_id, upload, passed.is_some())
        .await?;
    if let Some(passed) = passed {
        services.uiaa.finish(passed);
    }
    Ok(Json(json!({})))
}

pub async fn upload_signatures(
    State(services): State<Arc<Services>>,
    req: Ruma<upload_signatures::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    let failures = services
        .upload_key_signatures(&sender.user_id, &body_object(&req))
        .await?;
    Ok(Json(json!({ "failures": failures })))
}
