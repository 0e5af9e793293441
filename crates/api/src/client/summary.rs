//! `GET /v1/room_summary/{roomIdOrAlias}`: a preview of a room, also of
//! one on another server, before joining it.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{Error, Services};
use ruma::{api::client::room::get_summary, events::room::member::MembershipState};

use crate::{Ruma, RumaResponse, error::ApiError};

pub async fn room_summary(
    State(services): State<Arc<Services>>,
    req: Ruma<get_summary::v1::Request, true>,
) -> Result<RumaResponse<get_summary::v1::Response>, ApiError> {
    let user = req.session.as_ref().map(|s| s.user_id.as_ref());
    let (summary, membership) = services
        .room_preview(user, req.body.room_id_or_alias.as_str(), &req.body.via)
        .await?;
    let summary = serde_json::from_value(summary)
        .map_err(|e| Error::bad_json(format!("The room's summary is malformed: {e}")))?;
    let mut response = get_summary::v1::Response::new(summary);
    response.membership = membership.map(|m| MembershipState::from(m.as_str()));
    Ok(RumaResponse(response))
}
