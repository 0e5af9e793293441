//! `whoami`, password change, deactivation, third-party identifiers.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{Error, ErrorCode, Services, uiaa::UiaaPassed, users::Session};
use ruma::{
    OwnedUserId,
    api::client::account::{
        ThirdPartyIdRemovalStatus, change_password, deactivate, get_3pids, whoami,
    },
};

use crate::{Ruma, RumaResponse, error::ApiError};

pub async fn whoami(
    _: State<Arc<Services>>,
    req: Ruma<whoami::v3::Request, true>,
) -> Result<RumaResponse<whoami::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let mut response = whoami::v3::Response::new(sender.user_id.clone(), sender.is_guest);
    response.device_id = Some(sender.device_id.clone());
    Ok(RumaResponse(response))
}

/// Asks the user to prove it is them before a change, and says whom it is for: the
/// token's user, or (the spec allows these endpoints without a token) the
/// user the password proved.
async fn confirm_identity(
    services: &Services,
    session: Option<&Session>,
    auth: Option<&ruma::api::client::uiaa::AuthData>,
    json: Option<&serde_json::Value>,
    purpose: &'static str,
) -> Result<(UiaaPassed, OwnedUserId), ApiError> {
    let passed = services
        .reauthenticate(session, auth, json, purpose)
        .await?;
    let user_id = passed
        .user_id
        .clone()
        .ok_or_else(|| ApiError(Error::new(ErrorCode::MissingToken, "Missing access token.")))?;
    Ok((passed, user_id))
}

pub async fn change_password(
    State(services): State<Arc<Services>>,
    req: Ruma<change_password::v3::Request>,
) -> Result<RumaResponse<change_password::v3::Response>, ApiError> {
    let session = req.session.as_ref();
    let (passed, user_id) = confirm_identity(
        &services,
        session,
        req.body.auth.as_ref(),
        req.json.as_ref(),
        "change your password",
    )
    .await?;
    services
        .change_password(
            &user_id,
            session.map(|s| &*s.device_id),
            &req.body.new_password,
            req.body.logout_devices,
        )
        .await?;
    services.uiaa.finish(passed);
    Ok(RumaResponse(change_password::v3::Response::new()))
}

pub async fn deactivate(
    State(services): State<Arc<Services>>,
    req: Ruma<deactivate::v3::Request>,
) -> Result<RumaResponse<deactivate::v3::Response>, ApiError> {
    let session = req.session.as_ref();
    let (passed, user_id) = confirm_identity(
        &services,
        session,
        req.body.auth.as_ref(),
        req.json.as_ref(),
        "deactivate your account for good",
    )
    .await?;
    services.deactivate(&user_id).await?;
    services.uiaa.finish(passed);
    // No identity server holds this user's third-party ids: there was
    // nothing to unbind, which the spec calls success.
    Ok(RumaResponse(deactivate::v3::Response::new(
        ThirdPartyIdRemovalStatus::Success,
    )))
}

pub async fn third_party_ids(
    _: State<Arc<Services>>,
    req: Ruma<get_3pids::v3::Request>,
) -> Result<RumaResponse<get_3pids::v3::Response>, ApiError> {
    req.sender()?;
    // This server keeps no email addresses or phone numbers.
    Ok(RumaResponse(get_3pids::v3::Response::new(Vec::new())))
}
