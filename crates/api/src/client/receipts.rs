//! Typing notifications, read receipts and the fully-read marker.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{
    Error, Services,
    rooms::receipts::{FULLY_READ, READ, READ_PRIVATE},
};
use ruma::api::client::{
    read_marker::set_read_marker,
    receipt::create_receipt,
    typing::create_typing_event::{self, v3::Typing},
};

use crate::{Ruma, RumaResponse, error::ApiError};

/// `PUT /rooms/{roomId}/typing/{userId}`: only for oneself.
pub async fn typing(
    State(services): State<Arc<Services>>,
    req: Ruma<create_typing_event::v3::Request>,
) -> Result<RumaResponse<create_typing_event::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let body = &req.body;
    if body.user_id != sender.user_id {
        return Err(Error::forbidden("You can only set your own typing state.").into());
    }
    let timeout = match &body.state {
        Typing::Yes(info) => Some(info.timeout),
        Typing::No => None,
    };
    services.set_typing(body.room_id.as_str(), &sender.user_id, timeout)?;
    Ok(RumaResponse(create_typing_event::v3::Response::new()))
}

/// `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`.
pub async fn receipt(
    State(services): State<Arc<Services>>,
    req: Ruma<create_receipt::v3::Request>,
) -> Result<RumaResponse<create_receipt::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let body = &req.body;
    services
        .set_receipt(
            &sender.user_id,
            body.room_id.as_str(),
            body.receipt_type.as_str(),
            body.event_id.as_str(),
            body.thread.as_str(),
        )
        .await?;
    Ok(RumaResponse(create_receipt::v3::Response::new()))
}

/// `POST /rooms/{roomId}/read_markers`: the fully-read marker and up to two
/// unthreaded receipts in one request.
pub async fn read_markers(
    State(services): State<Arc<Services>>,
    req: Ruma<set_read_marker::v3::Request>,
) -> Result<RumaResponse<set_read_marker::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let body = &req.body;
    let markers = [
        (FULLY_READ, &body.fully_read),
        (READ, &body.read_receipt),
        (READ_PRIVATE, &body.private_read_receipt),
    ];
    for (kind, event_id) in markers {
        if let Some(event_id) = event_id {
            services
                .set_receipt(
                    &sender.user_id,
                    body.room_id.as_str(),
                    kind,
                    event_id.as_str(),
                    None,
                )
                .await?;
        }
    }
    Ok(RumaResponse(set_read_marker::v3::Response::new()))
}
