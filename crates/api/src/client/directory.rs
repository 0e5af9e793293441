//! The room directory: `GET/PUT /directory/list/room/{roomId}` and
//! `GET/POST /publicRooms`: this server's rooms, or another server's
//! directory asked over federation (`server=`).

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{
    Error, Services,
    rooms::directory::{DirectoryPage, DirectoryQuery},
};
use ruma::{
    ServerName, UInt,
    api::client::{
        directory::{
            get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
        },
        room::Visibility,
    },
    directory::PublicRoomsChunk,
};

use crate::{Ruma, RumaResponse, error::ApiError};

pub async fn get_visibility(
    State(services): State<Arc<Services>>,
    req: Ruma<get_room_visibility::v3::Request>,
) -> Result<RumaResponse<get_room_visibility::v3::Response>, ApiError> {
    let visibility = if services.room_is_published(req.body.room_id.as_str())? {
        Visibility::Public
    } else {
        Visibility::Private
    };
    Ok(RumaResponse(get_room_visibility::v3::Response::new(
        visibility,
    )))
}

pub async fn set_visibility(
    State(services): State<Arc<Services>>,
    req: Ruma<set_room_visibility::v3::Request>,
) -> Result<RumaResponse<set_room_visibility::v3::Response>, ApiError> {
    let public = match &req.body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        other => {
            return Err(
                Error::invalid_param(format!("Unknown visibility {}.", other.as_str())).into(),
            );
        }
    };
    services.set_room_visibility(&req.sender()?.user_id, req.body.room_id.as_str(), public)?;
    Ok(RumaResponse(set_room_visibility::v3::Response::new()))
}

/// Another server's directory, asked of that server: `None` for our own.
async fn remote_directory(
    services: &Services,
    server: Option<&ServerName>,
    body: serde_json::Value,
) -> Result<Option<Listing>, ApiError> {
    let Some(server) = server.filter(|s| *s != services.config.server_name) else {
        return Ok(None);
    };
    // Absent fields stay absent: Synapse reads a `null` limit as a number.
    let mut body = body;
    if let Some(fields) = body.as_object_mut() {
        fields.retain(|_, value| !value.is_null());
    }
    let answer = services.remote_public_rooms(server, &body).await?;
    let chunk = answer
        .get("chunk")
        .and_then(|c| c.as_array())
        .map(|rooms| {
            rooms
                .iter()
                .filter_map(|room| serde_json::from_value(room.clone()).ok())
                .collect()
        })
        .unwrap_or_default();
    let text = |key: &str| answer.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    Ok(Some(Listing {
        chunk,
        next_batch: text("next_batch"),
        prev_batch: text("prev_batch"),
        total: answer
            .get("total_room_count_estimate")
            .and_then(|v| v.as_u64())
            .and_then(|n| UInt::try_from(n).ok()),
    }))
}

/// A directory page token: an offset into the sorted list.
pub(crate) fn since(token: Option<&str>) -> Result<usize, ApiError> {
    token.map_or(Ok(0), |t| {
        t.parse()
            .map_err(|_| Error::invalid_param(format!("Invalid since token {t:?}.")).into())
    })
}

/// The page's rooms and tokens, in the shape both routes answer with.
struct Listing {
    chunk: Vec<PublicRoomsChunk>,
    next_batch: Option<String>,
    prev_batch: Option<String>,
    total: Option<UInt>,
}

fn listing(page: DirectoryPage) -> Result<Listing, ApiError> {
    let chunk = page
        .chunk
        .into_iter()
        .map(|summary| serde_json::from_value(summary).map_err(Error::internal))
        .collect::<Result<_, _>>()?;
    Ok(Listing {
        chunk,
        next_batch: page.next.map(|n| n.to_string()),
        prev_batch: page.prev.map(|p| p.to_string()),
        total: UInt::try_from(page.total as u64).ok(),
    })
}

pub async fn get_public(
    State(services): State<Arc<Services>>,
    req: Ruma<get_public_rooms::v3::Request, true>,
) -> Result<RumaResponse<get_public_rooms::v3::Response>, ApiError> {
    let body = &req.body;
    let remote = remote_directory(
        &services,
        body.server.as_deref(),
        serde_json::json!({ "limit": body.limit, "since": body.since }),
    )
    .await?;
    let listing = match remote {
        Some(listing) => listing,
        None => listing(services.public_rooms(&DirectoryQuery {
            limit: body.limit.map(super::count),
            since: since(body.since.as_deref())?,
            ..DirectoryQuery::default()
        })?)?,
    };
    let mut response = get_public_rooms::v3::Response::new(listing.chunk);
    response.next_batch = listing.next_batch;
    response.prev_batch = listing.prev_batch;
    response.total_room_count_estimate = listing.total;
    Ok(RumaResponse(response))
}

pub async fn post_public(
    State(services): State<Arc<Services>>,
    req: Ruma<get_public_rooms_filtered::v3::Request, true>,
) -> Result<RumaResponse<get_public_rooms_filtered::v3::Response>, ApiError> {
    let body = &req.body;
    let remote = remote_directory(
        &services,
        body.server.as_deref(),
        serde_json::json!({
            "limit": body.limit,
            "since": body.since,
            "filter": body.filter,
        }),
    )
    .await?;
    let listing = match remote {
        Some(listing) => listing,
        None => {
            let room_types = (!body.filter.room_types.is_empty()).then(|| {
                body.filter
                    .room_types
                    .iter()
                    .map(|t| t.as_str().map(str::to_owned))
                    .collect()
            });
            listing(
                services.public_rooms(&DirectoryQuery {
                    search: body
                        .filter
                        .generic_search_term
                        .clone()
                        .filter(|t| !t.is_empty()),
                    room_types,
                    limit: body.limit.map(super::count),
                    since: since(body.since.as_deref())?,
                })?,
            )?
        }
    };
    let mut response = get_public_rooms_filtered::v3::Response::new();
    response.chunk = listing.chunk;
    response.next_batch = listing.next_batch;
    response.prev_batch = listing.prev_batch;
    response.total_room_count_estimate = listing.total;
    Ok(RumaResponse(response))
}
