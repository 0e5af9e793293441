//! Room state: `GET /rooms/{id}/state`, `GET/PUT /rooms/{id}/state/{type}/{key}`.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{Error, Services, rooms::send::NewEvent};
use ruma::{
    OwnedEventId,
    api::client::state::{
        get_state_event_for_key::{self, v3::StateEventFormat},
        get_state_events, send_state_event,
    },
};

use super::room::require_joined;
use crate::{Ruma, RumaResponse, error::ApiError};

pub async fn get_all(
    State(services): State<Arc<Services>>,
    req: Ruma<get_state_events::v3::Request, true>,
) -> Result<RumaResponse<get_state_events::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let room_id = req.body.room_id.as_str();
    require_joined(&services, sender.user_id.as_str(), room_id)?;
    let state = services.current_state_of(room_id)?;
    let mut events = Vec::with_capacity(state.len());
    for &short in state.values() {
        if let Some(pdu) = services.rooms.pdu(short, &services.short_ids)? {
            events.push(super::room::client_event(&pdu)?);
        }
    }
    Ok(RumaResponse(get_state_events::v3::Response::new(events)))
}

pub async fn get_one(
    State(services): State<Arc<Services>>,
    req: Ruma<get_state_event_for_key::v3::Request, true>,
) -> Result<RumaResponse<get_state_event_for_key::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let room_id = req.body.room_id.as_str();
    require_joined(&services, sender.user_id.as_str(), room_id)?;
    let state = services.current_state_of(room_id)?;
    let kind = req.body.event_type.to_string();
    let pdu = services
        .state_event(&state, &kind, &req.body.state_key)?
        .ok_or_else(|| Error::not_found("No state event of this type and key."))?;
    let body = match req.body.format {
        StateEventFormat::Event => pdu.to_client_event(),
        _ => pdu.content.clone(),
    };
    let raw = serde_json::value::to_raw_value(&body).map_err(Error::internal)?;
    Ok(RumaResponse(get_state_event_for_key::v3::Response::new(
        raw,
    )))
}

pub async fn put(
    State(services): State<Arc<Services>>,
    req: Ruma<send_state_event::v3::Request, true>,
) -> Result<RumaResponse<send_state_event::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let content = super::room::content(&req.body.body)?;
    let kind = req.body.event_type.to_string();
    let pdu = services
        .send_local_event(
            req.body.room_id.as_str(),
            &sender.user_id,
            NewEvent {
                kind: &kind,
                state_key: Some(&req.body.state_key),
                content,
            },
        )
        .await?;
    let event_id = OwnedEventId::try_from(pdu.event_id.as_str()).map_err(Error::internal)?;
    Ok(RumaResponse(send_state_event::v3::Response::new(event_id)))
}
