//! `POST /user/{userId}/openid/request_token`: a token a third party (a
//! widget, an integration manager) can check with this server.

use std::{sync::Arc, time::Duration};

use axum::extract::State;
use conduit_service::{Error, Services, openid::OPENID_TOKEN_LIFETIME};
use ruma::api::client::account::request_openid_token;

use crate::{Ruma, RumaResponse, error::ApiError};

pub async fn request_token(
    State(services): State<Arc<Services>>,
    req: Ruma<request_openid_token::v3::Request>,
) -> Result<RumaResponse<request_openid_token::v3::Response>, ApiError> {
    let sender = req.sender()?;
    if req.body.user_id != sender.user_id {
        return Err(Error::forbidden("You can only ask for a token of your own.").into());
    }
    let token = services.create_openid_token(&sender.user_id)?;
    Ok(RumaResponse(request_openid_token::v3::Response::new(
        token,
        ruma::authentication::TokenType::Bearer,
        services.config.server_name.clone(),
        Duration::from_secs(OPENID_TOKEN_LIFETIME),
    )))
}
