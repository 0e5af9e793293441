//! `POST /search` (room events) and `POST /user_directory/search`.

use std::sync::Arc;

use axum::{Json, extract::State};
use conduit_service::{
    Error, Services,
    rooms::{messages::EventFilter, search::SearchQuery},
};
use ruma::api::client::{
    search::search_events::{self, v3::OrderBy},
    user_directory::search_users,
};
use serde_json::{Map, Value as JsonValue, json};

use crate::{Ruma, error::ApiError};

/// Results per page when the filter sets no limit.
const DEFAULT_SEARCH_LIMIT: usize = 10;

/// Newest first: the index has no relevance ranking yet, so `rank` orders
/// like `recent` and each result's rank is 1.
pub async fn search_events(
    State(services): State<Arc<Services>>,
    req: Ruma<search_events::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    let body = &req.body;
    let Some(criteria) = &body.search_categories.room_events else {
        return Ok(Json(json!({ "search_categories": {} })));
    };
    if let Some(order) = &criteria.order_by
        && !matches!(order, OrderBy::Recent | OrderBy::Rank)
    {
        return Err(Error::invalid_param("Unknown order_by.").into());
    }
    let before = super::messages::token(body.next_batch.as_deref())?;
    let filter = &criteria.filter;
    let page = services.search_events(
        &sender.user_id,
        &SearchQuery {
            term: criteria.search_term.clone(),
            keys: criteria
                .keys
                .iter()
                .flatten()
                .map(|k| k.as_str().to_owned())
                .collect(),
            rooms: filter
                .rooms
                .as_ref()
                .map(|r| r.iter().map(ToString::to_string).collect()),
            filter: EventFilter::from(filter),
            before,
            limit: filter.limit.map_or(DEFAULT_SEARCH_LIMIT, super::count),
        },
    )?;
    let context = &criteria.event_context;
    let want_context = !(context.before_limit == 0u32.into() && context.after_limit == 0u32.into());
    let mut results = Vec::with_capacity(page.results.len());
    let mut rooms_seen = Vec::new();
    for (room_id, pdu) in &page.results {
        let mut result = json!({
            "rank": 1.0,
            "result": services.serve_event(&sender.user_id, pdu)?,
        });
        if want_context {
            let limit = super::count(context.before_limit)
                .saturating_add(super::count(context.after_limit));
            let around = services.context(
                &sender.user_id,
                room_id,
                &pdu.event_id,
                limit.min(conduit_service::rooms::messages::MAX_PAGE),
                EventFilter::default(),
                false,
            )?;
            let serve = |events: &[conduit_service::rooms::pdu::Pdu]| {
                events
                    .iter()
                    .map(|e| services.serve_event(&sender.user_id, e))
                    .collect::<Result<Vec<_>, _>>()
            };
            result["context"] = json!({
                "events_before": serve(&around.before)?,
                "events_after": serve(&around.after)?,
                "start": around.start.to_string(),
                "end": around.end.to_string(),
            });
        }
        if !rooms_seen.contains(room_id) {
            rooms_seen.push(room_id.clone());
        }
        results.push(result);
    }
    let mut room_events = json!({
        "count": page.count,
        "highlights": page.highlights,
        "results": results,
    });
    if let Some(next) = page.next {
        room_events["next_batch"] = next.to_string().into();
    }
    if criteria.include_state == Some(true) {
        let mut state = Map::new();
        for room_id in rooms_seen {
            let events = services
                .current_state_of(&room_id)?
                .values()
                .map(|&short| services.rooms.pdu(short, &services.short_ids))
                .filter_map(Result::transpose)
                .map(|pdu| pdu.map(|p| p.to_client_event()))
                .collect::<Result<Vec<_>, _>>()?;
            state.insert(room_id, events.into());
        }
        room_events["state"] = state.into();
    }
    Ok(Json(
        json!({ "search_categories": { "room_events": room_events } }),
    ))
}

pub async fn search_users(
    State(services): State<Arc<Services>>,
    req: Ruma<search_users::v3::Request>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    let limit = super::count(req.body.limit);
    let (users, limited) = services.search_users(&sender.user_id, &req.body.search_term, limit)?;
    let results: Vec<JsonValue> = users
        .into_iter()
        .map(|user| {
            let mut entry = json!({ "user_id": user.user_id });
            if let Some(name) = user.display_name {
                entry["display_name"] = name.into();
            }
            if let Some(avatar) = user.avatar_url {
                entry["avatar_url"] = avatar.into();
            }
            entry
        })
        .collect();
    Ok(Json(json!({ "results": results, "limited": limited })))
}
