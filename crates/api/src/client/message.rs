//! `PUT /rooms/{id}/send/{type}/{txnId}`.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{
    Error, Services,
    rooms::send::{NewEvent, Transaction},
};
use ruma::{OwnedEventId, api::client::message::send_message_event};

use crate::{Ruma, RumaResponse, error::ApiError};

pub async fn send(
    State(services): State<Arc<Services>>,
    req: Ruma<send_message_event::v3::Request, true>,
) -> Result<RumaResponse<send_message_event::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let content = super::room::content(&req.body.body)?;
    let kind = req.body.event_type.to_string();
    let pdu = services
        .send_event(
            req.body.room_id.as_str(),
            &sender.user_id,
            NewEvent {
                kind: &kind,
                state_key: None,
                content,
            },
            Some(Transaction {
                user_id: &sender.user_id,
                device_id: sender.device_id.as_str(),
                txn_id: req.body.txn_id.as_str(),
            }),
        )
        .await?;
    let event_id = OwnedEventId::try_from(pdu.event_id.as_str()).map_err(Error::internal)?;
    Ok(RumaResponse(send_message_event::v3::Response::new(
        event_id,
    )))
}
