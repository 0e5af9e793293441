//! `GET /rooms/{id}/messages`: the timeline, page by page, both directions.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{
    Error, Services,
    rooms::messages::{EventFilter, PageRequest},
};
use ruma::api::{
    Direction,
    client::{context::get_context, message::get_message_events},
};

use crate::{Ruma, RumaResponse, error::ApiError};

pub(super) fn token(value: Option<&str>) -> Result<Option<u64>, ApiError> {
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
    let filter = EventFilter::from(&body.filter);
    let limit = super::count(body.limit);
    let from = token(body.from.as_deref())?;
    let forward = body.dir == Direction::Forward;
    // Paging back past what this server holds asks the room's other
    // servers for the history before (only for members who may read it).
    if !forward
        && services
            .require_may_read(&sender.user_id, body.room_id.as_str())
            .is_ok()
    {
        services
            .backfill_if_needed(body.room_id.as_str(), from, limit)
            .await;
    }
    let page = services.messages(
        &sender.user_id,
        &PageRequest {
            room_id: body.room_id.as_str(),
            from,
            to: token(body.to.as_deref())?,
            forward,
            limit,
            filter,
        },
    )?;
    let mut chunk = Vec::with_capacity(page.events.len());
    for pdu in &page.events {
        chunk.push(super::room::served_event(&services, &sender.user_id, pdu)?);
    }
    let mut response = get_message_events::v3::Response::new();
    response.start = page.start.to_string();
    response.end = page.end.map(|end| end.to_string());
    response.chunk = chunk;
    Ok(RumaResponse(response))
}

/// `GET /rooms/{id}/context/{eventId}`.
pub async fn context(
    State(services): State<Arc<Services>>,
    req: Ruma<get_context::v3::Request, true>,
) -> Result<RumaResponse<get_context::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let body = &req.body;
    let limit = super::count(body.limit).min(conduit_service::rooms::messages::MAX_PAGE);
    let context = services.context(
        &sender.user_id,
        body.room_id.as_str(),
        body.event_id.as_str(),
        limit,
        EventFilter::from(&body.filter),
        !body.filter.lazy_load_options.is_disabled(),
    )?;
    let serve = |events: &[conduit_service::rooms::pdu::Pdu]| {
        events
            .iter()
            .map(|pdu| super::room::served_event(&services, &sender.user_id, pdu))
            .collect::<Result<Vec<_>, _>>()
    };
    let mut response = get_context::v3::Response::new();
    response.start = Some(context.start.to_string());
    response.end = Some(context.end.to_string());
    response.events_before = serve(&context.before)?;
    response.event = Some(super::room::served_event(
        &services,
        &sender.user_id,
        &context.event,
    )?);
    response.events_after = serve(&context.after)?;
    response.state = context
        .state
        .iter()
        .map(super::room::client_event)
        .collect::<Result<_, _>>()?;
    Ok(RumaResponse(response))
}
