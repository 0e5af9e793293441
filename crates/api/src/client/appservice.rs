//! `POST /_matrix/client/v1/appservice/{appserviceId}/ping`: an appservice
//! checks that this server reaches it.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{Error, ErrorCode, Services};
use ruma::api::client::appservice::request_ping;

use crate::{Ruma, RumaResponse, error::ApiError};

pub async fn ping(
    State(services): State<Arc<Services>>,
    req: Ruma<request_ping::v1::Request>,
) -> Result<RumaResponse<request_ping::v1::Response>, ApiError> {
    let Some(appservice) = req.sender()?.appservice.as_deref() else {
        return Err(Error::new(
            ErrorCode::Forbidden,
            "Only an application service may ping.",
        )
        .into());
    };
    let took_ms = services
        .ping_appservice(
            appservice,
            &req.body.appservice_id,
            req.body.transaction_id.as_deref().map(|t| t.as_str()),
        )
        .await?;
    Ok(RumaResponse(request_ping::v1::Response::new(
        std::time::Duration::from_millis(took_ms),
    )))
}
