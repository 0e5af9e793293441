//! `GET /rooms/{id}/messages`: the timeline, page by page, both directions.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{
    Error, Services,
    rooms::messages::{EventFilter, PageRequest},
};
use ruma::api::{Direction, client::message::get_message_events};

use crate::{Ruma, RumaResponse, error::ApiError};

fn token(value: Option<&str>) -> Result<Option<u64>, ApiError> {
    value
        .map(|t| {
            t.parse::<u64>().map_err(|_| {
                Error::invalid_param(format!("Invalid pagination token {t:?}.")).into()
            })
        })
        .transpose()
}

pub async fn get(
    State(services): State<Arc<Services>>,
    req: Ruma<get_message_events::v3::Request, true>,
) -> Result<RumaResponse<get_message_events::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let body = &req.body;
    let filter = EventFilter {
        types: body.filter.types.clone(),
        not_types: body.filter.not_types.clone(),
        senders: body
            .filter
            .senders
            .as_ref()
            .map(|s| s.iter().map(ToString::to_string).collect()),
        not_senders: body
            .filter
            .not_senders
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    let limit = usize::try_from(u64::from(body.limit)).unwrap_or(usize::MAX);
    let page = services.messages(
        &sender.user_id,
        &PageRequest {
            room_id: body.room_id.as_str(),
            from: token(body.from.as_deref())?,
            to: token(body.to.as_deref())?,
            forward: body.dir == Direction::Forward,
            limit,
            filter,
        },
    )?;
    let mut chunk = Vec::with_capacity(page.events.len());
    for pdu in &page.events {
        chunk.push(super::room::client_event(pdu)?);
    }
    let mut response = get_message_events::v3::Response::new();
    response.start = page.start.to_string();
    response.end = page.end.map(|end| end.to_string());
    response.chunk = chunk;
    Ok(RumaResponse(response))
}
