//! Rooms: `POST /createRoom`, `GET /joined_rooms`, `GET /rooms/{id}/event/{id}`.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{
    Error, ErrorCode, Services,
    rooms::create::{NewRoom, Preset},
};
use ruma::{
    OwnedRoomId,
    api::client::{
        membership::joined_rooms,
        room::{Visibility, create_room, create_room::v3::RoomPreset, get_room_event},
    },
    serde::Raw,
};
use serde_json::{Map, Value as JsonValue};

use crate::{Ruma, RumaResponse, error::ApiError};

/// A raw JSON object from the request, or `M_BAD_JSON`.
fn object<T>(raw: &Raw<T>, what: &str) -> Result<Map<String, JsonValue>, ApiError> {
    match serde_json::from_str(raw.json().get()) {
        Ok(JsonValue::Object(map)) => Ok(map),
        _ => Err(Error::bad_json(format!("`{what}` must be an object.")).into()),
    }
}

pub async fn create_room(
    State(services): State<Arc<Services>>,
    req: Ruma<create_room::v3::Request>,
) -> Result<RumaResponse<create_room::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let body = &req.body;
    if !body.invite_3pid.is_empty() {
        return Err(
            Error::invalid_param("Third-party invites are not supported by this server.").into(),
        );
    }
    let public = body.visibility == Visibility::Public;
    let preset = match &body.preset {
        Some(RoomPreset::PrivateChat) => Preset::PrivateChat,
        Some(RoomPreset::TrustedPrivateChat) => Preset::TrustedPrivateChat,
        Some(RoomPreset::PublicChat) => Preset::PublicChat,
        Some(other) => {
            return Err(Error::invalid_param(format!("Unknown preset {}.", other.as_str())).into());
        }
        None if public => Preset::PublicChat,
        None => Preset::PrivateChat,
    };
    let mut initial_state = Vec::new();
    for raw in &body.initial_state {
        let event = object(raw, "initial_state")?;
        let kind = event.get("type").and_then(JsonValue::as_str);
        let content = event.get("content").filter(|c| c.is_object());
        let (Some(kind), Some(content)) = (kind, content) else {
            return Err(Error::bad_json(
                "Each initial_state event needs a type and a content object.",
            )
            .into());
        };
        let state_key = event
            .get("state_key")
            .and_then(JsonValue::as_str)
            .unwrap_or("");
        initial_state.push((kind.to_owned(), state_key.to_owned(), content.clone()));
    }
    let room_id = services
        .create_room(
            &sender.user_id,
            NewRoom {
                version: body.room_version.as_ref().map(|v| v.as_str()),
                preset,
                name: body.name.as_deref(),
                topic: body.topic.as_deref(),
                creation_content: body
                    .creation_content
                    .as_ref()
                    .map(|c| object(c, "creation_content"))
                    .transpose()?,
                power_level_content_override: body
                    .power_level_content_override
                    .as_ref()
                    .map(|c| object(c, "power_level_content_override"))
                    .transpose()?,
                initial_state,
                invite: body.invite.clone(),
                is_direct: body.is_direct,
                alias_localpart: body.room_alias_name.as_deref(),
                publish: public,
            },
        )
        .await?;
    let room_id = OwnedRoomId::try_from(room_id).map_err(Error::internal)?;
    Ok(RumaResponse(create_room::v3::Response::new(room_id)))
}

pub async fn joined_rooms(
    State(services): State<Arc<Services>>,
    req: Ruma<joined_rooms::v3::Request>,
) -> Result<RumaResponse<joined_rooms::v3::Response>, ApiError> {
    let rooms = services
        .rooms
        .joined_rooms(req.sender()?.user_id.as_str())?
        .into_iter()
        .filter_map(|id| OwnedRoomId::try_from(id).ok())
        .collect();
    Ok(RumaResponse(joined_rooms::v3::Response::new(rooms)))
}

/// Whoever history visibility lets read the event sees it; everyone else
/// gets `404`, as the spec asks, so that event ids cannot be probed.
pub async fn get_event(
    State(services): State<Arc<Services>>,
    req: Ruma<get_room_event::v3::Request, true>,
) -> Result<RumaResponse<get_room_event::v3::Response>, ApiError> {
    let sender = req.sender()?;
    // Strangers get 404 like everyone who may not see the event.
    let (pdu, _) = services
        .readable_event(
            &sender.user_id,
            req.body.room_id.as_str(),
            req.body.event_id.as_str(),
        )
        .map_err(|e| match e.code() {
            Some(ErrorCode::Forbidden) => Error::not_found("Event not found."),
            _ => e,
        })?;
    Ok(RumaResponse(get_room_event::v3::Response::new(
        served_event(&services, &sender.user_id, &pdu)?,
    )))
}

/// An event's content from a request: a JSON object, or `M_BAD_JSON`.
pub(super) fn content<T>(raw: &Raw<T>) -> Result<JsonValue, ApiError> {
    object(raw, "content").map(JsonValue::Object)
}

/// An event in the client format, as the raw JSON ruma's responses hold.
pub(super) fn client_event<T>(pdu: &conduit_service::rooms::pdu::Pdu) -> Result<Raw<T>, ApiError> {
    raw_json(&pdu.to_client_event())
}

/// A timeline event as served to `user_id`, with its bundled aggregations.
pub(super) fn served_event<T>(
    services: &Services,
    user_id: &ruma::UserId,
    pdu: &conduit_service::rooms::pdu::Pdu,
) -> Result<Raw<T>, ApiError> {
    raw_json(&services.serve_event(user_id, pdu)?)
}

/// Any JSON as a ruma `Raw`.
pub(super) fn raw_json<T>(json: &JsonValue) -> Result<Raw<T>, ApiError> {
    let raw = serde_json::value::to_raw_value(json).map_err(Error::internal)?;
    Ok(Raw::from_json(raw))
}

/// `M_FORBIDDEN` unless the user is joined to the room.
pub(super) fn require_joined(
    services: &Services,
    user_id: &str,
    room_id: &str,
) -> Result<(), ApiError> {
    services.rooms.require_joined(user_id, room_id)?;
    Ok(())
}
