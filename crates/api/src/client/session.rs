//! Login, token refresh and logout.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{Error, Services, session::PasswordLogin};
use ruma::api::client::{
    session::{
        get_login_types::{self, v3::LoginType},
        login::{self, v3::LoginInfo},
        logout, logout_all, refresh_token,
    },
    uiaa::UserIdentifier,
};

use crate::{Ruma, RumaResponse, error::ApiError};

pub async fn login_types(
    _: State<Arc<Services>>,
    _: Ruma<get_login_types::v3::Request, true>,
) -> Result<RumaResponse<get_login_types::v3::Response>, ApiError> {
    let types = vec![LoginType::Password(Default::default())];
    Ok(RumaResponse(get_login_types::v3::Response::new(types)))
}

#[allow(deprecated)] // the legacy `user` field is still sent by older clients
pub async fn login(
    State(services): State<Arc<Services>>,
    req: Ruma<login::v3::Request>,
) -> Result<RumaResponse<login::v3::Response>, ApiError> {
    let LoginInfo::Password(password) = &req.body.login_info else {
        return Err(Error::new(
            conduit_service::ErrorCode::Unknown,
            "Unsupported login type; see GET /login for the supported ones.",
        )
        .with_status(400)
        .into());
    };
    let user = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(id)), _) => id.user.as_str(),
        (None, Some(user)) => user.as_str(),
        (Some(_), _) => {
            return Err(Error::new(
                conduit_service::ErrorCode::Unknown,
                "Only m.id.user identifiers are supported.",
            )
            .with_status(400)
            .into());
        }
        (None, None) => return Err(Error::bad_json("Missing identifier.").into()),
    };
    let (user_id, session) = services
        .login_with_password(PasswordLogin {
            user,
            password: &password.password,
            device_id: req.body.device_id.as_deref(),
            display_name: req.body.initial_device_display_name.as_deref(),
            refresh_token: req.body.refresh_token,
            client_ip: req.client_ip.as_deref(),
        })
        .await?;
    let mut response = login::v3::Response::new(user_id, session.access_token, session.device_id);
    response.refresh_token = session.refresh_token;
    response.expires_in = session.expires_in_ms.map(std::time::Duration::from_millis);
    Ok(RumaResponse(response))
}

pub async fn refresh(
    State(services): State<Arc<Services>>,
    req: Ruma<refresh_token::v3::Request, true>,
) -> Result<RumaResponse<refresh_token::v3::Response>, ApiError> {
    let session = services.refresh(&req.body.refresh_token).await?;
    let mut response = refresh_token::v3::Response::new(session.access_token);
    response.refresh_token = session.refresh_token;
    response.expires_in_ms = session.expires_in_ms.map(std::time::Duration::from_millis);
    Ok(RumaResponse(response))
}

pub async fn logout(
    State(services): State<Arc<Services>>,
    req: Ruma<logout::v3::Request, true>,
) -> Result<RumaResponse<logout::v3::Response>, ApiError> {
    let sender = req.sender()?;
    services
        .devices
        .remove(&sender.user_id, &sender.device_id)?;
    Ok(RumaResponse(logout::v3::Response::new()))
}

pub async fn logout_all(
    State(services): State<Arc<Services>>,
    req: Ruma<logout_all::v3::Request, true>,
) -> Result<RumaResponse<logout_all::v3::Response>, ApiError> {
    services.logout_all(&req.sender()?.user_id).await?;
    Ok(RumaResponse(logout_all::v3::Response::new()))
}
