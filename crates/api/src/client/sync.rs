//! `GET /sync` (see `conduit_service::sync` for what the first version covers).

use std::{sync::Arc, time::Duration};

use axum::{Json, extract::State};
use conduit_service::{Error, Services, rooms::messages::EventFilter, sync::SyncRequest};
use ruma::api::client::{
    filter::FilterDefinition,
    sync::sync_events::{self, v3::Filter},
};
use serde_json::Value as JsonValue;

use crate::{Ruma, error::ApiError};

/// The longest a sync waits, whatever the client asks.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_TIMELINE_LIMIT: usize = 10;

pub async fn sync(
    State(services): State<Arc<Services>>,
    req: Ruma<sync_events::v3::Request, true>,
) -> Result<Json<JsonValue>, ApiError> {
    let sender = req.sender()?;
    let body = &req.body;
    let definition = match &body.filter {
        Some(Filter::FilterDefinition(definition)) => definition.clone(),
        Some(Filter::FilterId(id)) => {
            let stored = services
                .filters
                .get(&sender.user_id, id)?
                .ok_or_else(|| Error::not_found("No such filter."))?;
            serde_json::from_value::<FilterDefinition>(stored)
                .map_err(|e| Error::bad_json(e.to_string()))?
        }
        _ => FilterDefinition::default(),
    };
    let since = body
        .since
        .as_deref()
        .map(|t| {
            t.parse::<u64>()
                .map_err(|_| Error::invalid_param(format!("Invalid since token {t:?}.")))
        })
        .transpose()?;
    let room_filter = &definition.room;
    let request = SyncRequest {
        device_id: sender.device_id.clone(),
        since,
        full_state: body.full_state,
        timeout: body.timeout.unwrap_or_default().min(MAX_TIMEOUT),
        timeline_limit: room_filter
            .timeline
            .limit
            .map_or(DEFAULT_TIMELINE_LIMIT, super::count)
            .min(conduit_service::rooms::messages::MAX_PAGE),
        timeline_filter: EventFilter::from(&room_filter.timeline),
        rooms: room_filter
            .rooms
            .as_ref()
            .map(|r| r.iter().map(ToString::to_string).collect()),
        not_rooms: room_filter
            .not_rooms
            .iter()
            .map(ToString::to_string)
            .collect(),
        unread_by_thread: room_filter.timeline.unread_thread_notifications,
        state_filter: EventFilter::from(&room_filter.state),
        lazy_load_members: !room_filter.state.lazy_load_options.is_disabled(),
        use_state_after: body.use_state_after,
        set_presence: match body.set_presence.as_str() {
            "offline" => None,
            state => Some(state.to_owned()),
        },
    };
    Ok(Json(services.sync(&sender.user_id, &request).await?))
}
