//! `GET /relations/{eventId}[/{relType}[/{eventType}]]` and `GET /threads`.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{
    Services,
    rooms::relations::{RelationsPage, RelationsRequest},
};
use ruma::{
    UInt,
    api::{
        Direction,
        client::{
            relations::{
                get_relating_events, get_relating_events_with_rel_type,
                get_relating_events_with_rel_type_and_event_type,
            },
            threads::get_threads::{self, v1::IncludeThreads},
        },
    },
    serde::Raw,
};
use serde_json::Value as JsonValue;

use crate::{Ruma, RumaResponse, error::ApiError};

fn token(value: Option<&str>) -> Result<Option<u64>, ApiError> {
    super::messages::token(value)
}

/// What the three `/relations` routes share: the query and the answer.
struct Query<'a> {
    room_id: &'a str,
    event_id: &'a str,
    from: Option<&'a str>,
    to: Option<&'a str>,
    dir: Direction,
    limit: Option<UInt>,
    recurse: bool,
}

fn run(
    services: &Services,
    user_id: &ruma::UserId,
    query: Query<'_>,
    rel_type: Option<&str>,
    event_type: Option<&str>,
) -> Result<RelationsPage, ApiError> {
    Ok(services.relations(
        user_id,
        &RelationsRequest {
            room_id: query.room_id,
            event_id: query.event_id,
            rel_type,
            event_type,
            from: token(query.from)?,
            to: token(query.to)?,
            forward: query.dir == Direction::Forward,
            limit: query.limit.map(super::count),
            recurse: query.recurse,
        },
    )?)
}

fn raw<T>(events: Vec<JsonValue>) -> Result<Vec<Raw<T>>, ApiError> {
    events.iter().map(super::room::raw_json).collect()
}

/// Fills the fields every `/relations` response shares.
macro_rules! respond {
    ($response:path, $page:expr) => {{
        let page = $page;
        let mut response = <$response>::new(raw(page.events)?);
        response.next_batch = page.next.map(|n| n.to_string());
        response.recursion_depth = page
            .recursion_depth
            .map(|d| UInt::try_from(d as u64).unwrap_or(UInt::MAX));
        Ok(RumaResponse(response))
    }};
}

macro_rules! query {
    ($body:expr) => {
        Query {
            room_id: $body.room_id.as_str(),
            event_id: $body.event_id.as_str(),
            from: $body.from.as_deref(),
            to: $body.to.as_deref(),
            dir: $body.dir,
            limit: $body.limit,
            recurse: $body.recurse,
        }
    };
}

pub async fn all(
    State(services): State<Arc<Services>>,
    req: Ruma<get_relating_events::v1::Request>,
) -> Result<RumaResponse<get_relating_events::v1::Response>, ApiError> {
    let page = run(
        &services,
        &req.sender()?.user_id,
        query!(req.body),
        None,
        None,
    )?;
    respond!(get_relating_events::v1::Response, page)
}

pub async fn with_rel_type(
    State(services): State<Arc<Services>>,
    req: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> Result<RumaResponse<get_relating_events_with_rel_type::v1::Response>, ApiError> {
    let rel_type = req.body.rel_type.to_string();
    let page = run(
        &services,
        &req.sender()?.user_id,
        query!(req.body),
        Some(&rel_type),
        None,
    )?;
    respond!(get_relating_events_with_rel_type::v1::Response, page)
}

pub async fn with_rel_type_and_event_type(
    State(services): State<Arc<Services>>,
    req: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> Result<RumaResponse<get_relating_events_with_rel_type_and_event_type::v1::Response>, ApiError>
{
    let rel_type = req.body.rel_type.to_string();
    let event_type = req.body.event_type.to_string();
    let page = run(
        &services,
        &req.sender()?.user_id,
        query!(req.body),
        Some(&rel_type),
        Some(&event_type),
    )?;
    respond!(
        get_relating_events_with_rel_type_and_event_type::v1::Response,
        page
    )
}

pub async fn threads(
    State(services): State<Arc<Services>>,
    req: Ruma<get_threads::v1::Request>,
) -> Result<RumaResponse<get_threads::v1::Response>, ApiError> {
    let body = &req.body;
    let (roots, next) = services.threads(
        &req.sender()?.user_id,
        body.room_id.as_str(),
        token(body.from.as_deref())?,
        body.limit.map(super::count).unwrap_or(50),
        body.include == IncludeThreads::Participated,
    )?;
    let mut response = get_threads::v1::Response::new(raw(roots)?);
    response.next_batch = next.map(|n| n.to_string());
    Ok(RumaResponse(response))
}
