//! Room aliases: `PUT/GET/DELETE /directory/room/{alias}`, `GET /rooms/{id}/aliases`.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{Error, Services};
use ruma::{
    OwnedRoomAliasId, OwnedRoomId,
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        room::aliases,
    },
};

use super::room::require_joined;
use crate::{Ruma, RumaResponse, error::ApiError};

pub async fn create(
    State(services): State<Arc<Services>>,
    req: Ruma<create_alias::v3::Request>,
) -> Result<RumaResponse<create_alias::v3::Response>, ApiError> {
    services.create_alias(
        &req.sender()?.user_id,
        req.body.room_alias.as_str(),
        req.body.room_id.as_str(),
    )?;
    Ok(RumaResponse(create_alias::v3::Response::new()))
}

pub async fn get(
    State(services): State<Arc<Services>>,
    req: Ruma<get_alias::v3::Request, true>,
) -> Result<RumaResponse<get_alias::v3::Response>, ApiError> {
    let room_id = services
        .local_alias_asking_appservices(req.body.room_alias.as_str())
        .await?
        .ok_or_else(|| Error::not_found("No room has this alias on this server."))?;
    let room_id = OwnedRoomId::try_from(room_id).map_err(Error::internal)?;
    let servers = vec![services.config.server_name.clone()];
    Ok(RumaResponse(get_alias::v3::Response::new(room_id, servers)))
}

pub async fn delete(
    State(services): State<Arc<Services>>,
    req: Ruma<delete_alias::v3::Request>,
) -> Result<RumaResponse<delete_alias::v3::Response>, ApiError> {
    services.delete_alias(&req.sender()?.user_id, req.body.room_alias.as_str())?;
    Ok(RumaResponse(delete_alias::v3::Response::new()))
}

pub async fn room_aliases(
    State(services): State<Arc<Services>>,
    req: Ruma<aliases::v3::Request>,
) -> Result<RumaResponse<aliases::v3::Response>, ApiError> {
    let room = req.body.room_id.as_str();
    require_joined(&services, req.sender()?.user_id.as_str(), room)?;
    let list = services
        .room_aliases(room)?
        .into_iter()
        .filter_map(|a| OwnedRoomAliasId::try_from(a).ok())
        .collect();
    Ok(RumaResponse(aliases::v3::Response::new(list)))
}
