//! Sync filters.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{Error, Services};
use ruma::api::client::filter::{create_filter, get_filter};

use crate::{Ruma, RumaResponse, error::ApiError};

pub async fn create(
    State(services): State<Arc<Services>>,
    req: Ruma<create_filter::v3::Request, true>,
) -> Result<RumaResponse<create_filter::v3::Response>, ApiError> {
    if req.body.user_id != req.sender()?.user_id {
        return Err(Error::forbidden("You cannot create filters for another user.").into());
    }
    // Stored as the client sent it (ruma checked its shape), so no field is
    // lost that a later sync implementation may honour.
    let filter = req
        .json
        .clone()
        .ok_or_else(|| Error::bad_json("Missing filter body."))?;
    let filter_id = services.filters.create(&req.body.user_id, &filter)?;
    Ok(RumaResponse(create_filter::v3::Response::new(filter_id)))
}

pub async fn get(
    State(services): State<Arc<Services>>,
    req: Ruma<get_filter::v3::Request, true>,
) -> Result<RumaResponse<get_filter::v3::Response>, ApiError> {
    if req.body.user_id != req.sender()?.user_id {
        return Err(Error::forbidden("You cannot read another user's filters.").into());
    }
    let filter = services
        .filters
        .get(&req.body.user_id, &req.body.filter_id)?
        .ok_or_else(|| Error::not_found("No such filter."))?;
    let filter = serde_json::from_value(filter).map_err(Error::internal)?;
    Ok(RumaResponse(get_filter::v3::Response::new(filter)))
}
