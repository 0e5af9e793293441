//! Account data, global and per room.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{Error, Services};
use ruma::{
    UserId,
    api::client::{
        config::{
            get_global_account_data, get_room_account_data, set_global_account_data,
            set_room_account_data,
        },
        tag::{create_tag, delete_tag, get_tags},
    },
    serde::Raw,
};
use serde_json::Value as JsonValue;

use crate::{Ruma, RumaResponse, error::ApiError};

fn own_data(path_user: &UserId, sender: &UserId) -> Result<(), ApiError> {
    if path_user == sender {
        Ok(())
    } else {
        Err(Error::forbidden("You cannot access another user's account data.").into())
    }
}

fn parse_content(raw: &Raw<impl Sized>) -> Result<JsonValue, ApiError> {
    serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(e.to_string()).into())
}

fn to_raw<T>(content: JsonValue) -> Result<Raw<T>, ApiError> {
    let raw = serde_json::value::to_raw_value(&content).map_err(Error::internal)?;
    Ok(Raw::from_json(raw))
}

pub async fn get_global(
    State(services): State<Arc<Services>>,
    req: Ruma<get_global_account_data::v3::Request>,
) -> Result<RumaResponse<get_global_account_data::v3::Response>, ApiError> {
    own_data(&req.body.user_id, &req.sender()?.user_id)?;
    let event_type = req.body.event_type.to_string();
    let content = services
        .account_data
        .get(&req.body.user_id, None, &event_type)?
        .ok_or_else(|| Error::not_found("No account data of this type."))?;
    Ok(RumaResponse(get_global_account_data::v3::Response::new(
        to_raw(content)?,
    )))
}

pub async fn set_global(
    State(services): State<Arc<Services>>,
    req: Ruma<set_global_account_data::v3::Request>,
) -> Result<RumaResponse<set_global_account_data::v3::Response>, ApiError> {
    own_data(&req.body.user_id, &req.sender()?.user_id)?;
    let content = parse_content(&req.body.data)?;
    let event_type = req.body.event_type.to_string();
    services
        .account_data
        .set_from_client(&req.body.user_id, None, &event_type, &content)?;
    Ok(RumaResponse(set_global_account_data::v3::Response::new()))
}

pub async fn get_room(
    State(services): State<Arc<Services>>,
    req: Ruma<get_room_account_data::v3::Request>,
) -> Result<RumaResponse<get_room_account_data::v3::Response>, ApiError> {
    own_data(&req.body.user_id, &req.sender()?.user_id)?;
    let event_type = req.body.event_type.to_string();
    let content = services
        .account_data
        .get(&req.body.user_id, Some(&req.body.room_id), &event_type)?
        .ok_or_else(|| Error::not_found("No account data of this type."))?;
    Ok(RumaResponse(get_room_account_data::v3::Response::new(
        to_raw(content)?,
    )))
}

pub async fn set_room(
    State(services): State<Arc<Services>>,
    req: Ruma<set_room_account_data::v3::Request>,
) -> Result<RumaResponse<set_room_account_data::v3::Response>, ApiError> {
    own_data(&req.body.user_id, &req.sender()?.user_id)?;
    let content = parse_content(&req.body.data)?;
    let event_type = req.body.event_type.to_string();
    services.account_data.set_from_client(
        &req.body.user_id,
        Some(&req.body.room_id),
        &event_type,
        &content,
    )?;
    Ok(RumaResponse(set_room_account_data::v3::Response::new()))
}

/// `GET /user/{userId}/rooms/{roomId}/tags`.
pub async fn get_tags(
    State(services): State<Arc<Services>>,
    req: Ruma<get_tags::v3::Request>,
) -> Result<RumaResponse<get_tags::v3::Response>, ApiError> {
    own_data(&req.body.user_id, &req.sender()?.user_id)?;
    let tags = services
        .account_data
        .tags(&req.body.user_id, &req.body.room_id)?;
    let tags = serde_json::from_value(tags).unwrap_or_default();
    Ok(RumaResponse(get_tags::v3::Response::new(tags)))
}

/// `PUT /user/{userId}/rooms/{roomId}/tags/{tag}`.
pub async fn create_tag(
    State(services): State<Arc<Services>>,
    req: Ruma<create_tag::v3::Request>,
) -> Result<RumaResponse<create_tag::v3::Response>, ApiError> {
    own_data(&req.body.user_id, &req.sender()?.user_id)?;
    let info = serde_json::to_value(&req.body.tag_info).map_err(Error::internal)?;
    services.account_data.set_tag(
        &req.body.user_id,
        &req.body.room_id,
        &req.body.tag,
        Some(info),
    )?;
    Ok(RumaResponse(create_tag::v3::Response::new()))
}

/// `DELETE /user/{userId}/rooms/{roomId}/tags/{tag}`.
pub async fn delete_tag(
    State(services): State<Arc<Services>>,
    req: Ruma<delete_tag::v3::Request>,
) -> Result<RumaResponse<delete_tag::v3::Response>, ApiError> {
    own_data(&req.body.user_id, &req.sender()?.user_id)?;
    services
        .account_data
        .set_tag(&req.body.user_id, &req.body.room_id, &req.body.tag, None)?;
    Ok(RumaResponse(delete_tag::v3::Response::new()))
}
