//! `POST /register`, `GET /register/available` and registration-token
//! validity.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{
    Error, ErrorCode, Services, registration::Registration, session::LoginDevice,
};
use ruma::api::client::account::{
    check_registration_token_validity, get_username_availability,
    register::{self, LoginType, RegistrationKind},
};

use crate::{Ruma, RumaResponse, error::ApiError};

pub async fn register(
    State(services): State<Arc<Services>>,
    req: Ruma<register::v3::Request, true>,
) -> Result<RumaResponse<register::v3::Response>, ApiError> {
    let body = &req.body;
    let appservice = req.session.as_ref().and_then(|s| s.appservice.as_deref());
    let registered = match (&body.login_type, appservice) {
        (Some(LoginType::ApplicationService), Some(appservice)) => services
            .register_appservice_user(
                appservice,
                body.username.as_deref(),
                LoginDevice {
                    device_id: body.device_id.as_deref(),
                    display_name: body.initial_device_display_name.as_deref(),
                    refresh_token: body.refresh_token,
                    client_ip: req.client_ip.as_deref(),
                },
                body.inhibit_login,
            )?,
        (Some(LoginType::ApplicationService), None) => {
            return Err(Error::new(
                ErrorCode::UnknownToken,
                "m.login.application_service needs an application service's as_token.",
            )
            .into());
        }
        (_, Some(_)) => {
            return Err(Error::new(
                ErrorCode::AppserviceLoginUnsupported,
                "An application service registers users with type m.login.application_service.",
            )
            .into());
        }
        (_, None) => {
            services
                .register(Registration {
                    username: body.username.as_deref(),
                    password: body.password.as_deref(),
                    device_id: body.device_id.as_deref(),
                    display_name: body.initial_device_display_name.as_deref(),
                    inhibit_login: body.inhibit_login,
                    refresh_token: body.refresh_token,
                    guest: body.kind == RegistrationKind::Guest,
                    auth: body.auth.as_ref(),
                    body: req.json.as_ref(),
                    client_ip: req.client_ip.as_deref(),
                })
                .await?
        }
    };
    let mut response = register::v3::Response::new(registered.user_id);
    if let Some(session) = registered.session {
        response.access_token = Some(session.access_token);
        response.device_id = Some(session.device_id);
        response.refresh_token = session.refresh_token;
        response.expires_in = session.expires_in_ms.map(std::time::Duration::from_millis);
    }
    Ok(RumaResponse(response))
}

pub async fn username_available(
    State(services): State<Arc<Services>>,
    req: Ruma<get_username_availability::v3::Request, true>,
) -> Result<RumaResponse<get_username_availability::v3::Response>, ApiError> {
    services.check_username_available(&req.body.username)?;
    Ok(RumaResponse(get_username_availability::v3::Response::new(
        true,
    )))
}

/// `GET /register/m.login.registration_token/validity`: rate-limited per
/// client address, so tokens cannot be guessed quickly.
pub async fn token_validity(
    State(services): State<Arc<Services>>,
    req: Ruma<check_registration_token_validity::v1::Request>,
) -> Result<RumaResponse<check_registration_token_validity::v1::Response>, ApiError> {
    services
        .token_validity_limiter
        .check(req.client_ip.as_deref().unwrap_or("unknown"))?;
    let token = &req.body.token;
    let valid = services.is_static_registration_token(token)
        || services.registration_tokens.is_valid(token)?;
    Ok(RumaResponse(
        check_registration_token_validity::v1::Response::new(valid),
    ))
}
