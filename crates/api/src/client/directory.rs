//! The room directory: `GET/PUT /directory/list/room/{roomId}` and
//! `GET/POST /publicRooms` (this server's rooms only).

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

/// The directory of another server needs federation, which this server
/// does not speak yet: say so rather than answer with our own rooms.
fn only_ours(services: &Services, server: Option<&ServerName>) -> Result<(), ApiError> {
    match server {
        Some(server) if server != services.config.server_name => Err(Error::invalid_param(
            "Room directories of other servers are not available yet.",
        )
        .into()),
        _ => Ok(()),
    }
}

fn since(token: Option<&str>) -> Result<usize, ApiError> {
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
    only_ours(&services, body.server.as_deref())?;
    let page = services.public_rooms(&DirectoryQuery {
        limit: body.limit.map(super::count),
        since: since(body.since.as_deref())?,
        ..DirectoryQuery::default()
    })?;
    let listing = listing(page)?;
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
    only_ours(&services, body.server.as_deref())?;
    let room_types = (!body.filter.room_types.is_empty()).then(|| {
        body.filter
            .room_types
            .iter()
            .map(|t| t.as_str().map(str::to_owned))
            .collect()
    });
    let page = services.public_rooms(&DirectoryQuery {
        search: body
            .filter
            .generic_search_term
            .clone()
            .filter(|t| !t.is_empty()),
        room_types,
        limit: body.limit.map(super::count),
        since: since(body.since.as_deref())?,
    })?;
    let listing = listing(page)?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    response.chunk = listing.chunk;
    response.next_batch = listing.next_batch;
    response.prev_batch = listing.prev_batch;
    response.total_room_count_estimate = listing.total;
    Ok(RumaResponse(response))
}
