//! `GET /v1/rooms/{roomId}/timestamp_to_event`: the event closest to a time.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{Error, Services};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, UInt,
    api::{Direction, client::room::get_event_by_timestamp},
};

use crate::{Ruma, RumaResponse, error::ApiError};

pub async fn timestamp_to_event(
    State(services): State<Arc<Services>>,
    req: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<RumaResponse<get_event_by_timestamp::v1::Response>, ApiError> {
    let sender = req.sender()?;
    let room_id = req.body.room_id.as_str();
    let room = services.require_may_read(&sender.user_id, room_id)?;
    let joined_now = services
        .rooms
        .membership(sender.user_id.as_str(), room_id)?
        == "join";
    let forward = req.body.dir == Direction::Forward;
    let pdu = services
        .event_at_timestamp(&room, req.body.ts.get().into(), forward, |pdu| {
            services.may_see(&sender.user_id, joined_now, pdu)
        })?
        .ok_or_else(|| Error::not_found("No event in that direction from that time."))?;
    let event_id = OwnedEventId::try_from(pdu.event_id.as_str()).map_err(Error::internal)?;
    let ts = MilliSecondsSinceUnixEpoch(UInt::try_from(pdu.origin_server_ts).unwrap_or_default());
    Ok(RumaResponse(get_event_by_timestamp::v1::Response::new(
        event_id, ts,
    )))
}
