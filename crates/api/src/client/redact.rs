//! `PUT /rooms/{id}/redact/{eventId}/{txnId}`.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{Error, Services, rooms::send::Transaction};
use ruma::{OwnedEventId, api::client::redact::redact_event};

use crate::{Ruma, RumaResponse, error::ApiError};

pub async fn redact(
    State(services): State<Arc<Services>>,
    req: Ruma<redact_event::v3::Request>,
) -> Result<RumaResponse<redact_event::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let body = &req.body;
    let redaction = services
        .redact_event(
            body.room_id.as_str(),
            &sender.user_id,
            body.event_id.as_str(),
            body.reason.as_deref(),
            Transaction {
                user_id: &sender.user_id,
                device_id: sender.device_id.as_str(),
                txn_id: body.txn_id.as_str(),
            },
        )
        .await?;
    let event_id = OwnedEventId::try_from(redaction.event_id.as_str()).map_err(Error::internal)?;
    Ok(RumaResponse(redact_event::v3::Response::new(event_id)))
}
