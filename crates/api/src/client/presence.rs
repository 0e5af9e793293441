//! `PUT/GET /presence/{userId}/status`.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{Error, Services};
use ruma::{
    api::client::presence::{get_presence, set_presence},
    presence::PresenceState,
};

use crate::{Ruma, RumaResponse, error::ApiError};

pub async fn set(
    State(services): State<Arc<Services>>,
    req: Ruma<set_presence::v3::Request>,
) -> Result<RumaResponse<set_presence::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let body = &req.body;
    if body.user_id != sender.user_id {
        return Err(Error::forbidden("You can only set your own presence.").into());
    }
    services.set_presence(
        &sender.user_id,
        body.presence.as_str(),
        Some(body.status_msg.clone()),
    )?;
    Ok(RumaResponse(set_presence::v3::Response::new()))
}

/// Visible for oneself and users sharing a room, `403` otherwise.
pub async fn get(
    State(services): State<Arc<Services>>,
    req: Ruma<get_presence::v3::Request>,
) -> Result<RumaResponse<get_presence::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let user_id = &req.body.user_id;
    if !services.share_a_room(&sender.user_id, user_id)? {
        return Err(Error::forbidden("You do not share a room with this user.").into());
    }
    let view = services.presence_of(user_id);
    let mut response = get_presence::v3::Response::new(PresenceState::from(view.presence.as_str()));
    response.status_msg = view.status_msg;
    response.currently_active = Some(view.currently_active);
    response.last_active_ago = Some(std::time::Duration::from_millis(view.last_active_ago));
    Ok(RumaResponse(response))
}
