//! `GET /v1/rooms/{roomId}/hierarchy`: a space and the rooms in it.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{Error, Services, rooms::hierarchy::HierarchyRequest};
use ruma::api::client::space::get_hierarchy;

use crate::{Ruma, RumaResponse, error::ApiError};

pub async fn hierarchy(
    State(services): State<Arc<Services>>,
    req: Ruma<get_hierarchy::v1::Request>,
) -> Result<RumaResponse<get_hierarchy::v1::Response>, ApiError> {
    let sender = req.sender()?;
    let body = &req.body;
    let skip = match body.from.as_deref() {
        Some(token) => token
            .parse()
            .map_err(|_| Error::invalid_param(format!("Invalid from token {token:?}.")))?,
        None => 0,
    };
    let (entries, next) = services
        .space_hierarchy(
            &sender.user_id,
            &HierarchyRequest {
                room_id: body.room_id.as_str(),
                suggested_only: body.suggested_only,
                max_depth: body.max_depth.map(super::count),
                limit: body.limit.map(super::count),
                skip,
            },
        )
        .await?;
    let mut response = get_hierarchy::v1::Response::new();
    // An entry another server sent that does not parse is left out.
    response.rooms = entries
        .into_iter()
        .filter_map(|entry| serde_json::from_value(entry).ok())
        .collect();
    response.next_batch = next.map(|n| n.to_string());
    Ok(RumaResponse(response))
}
