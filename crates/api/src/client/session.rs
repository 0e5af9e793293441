//! Login, token refresh and logout.

use std::sync::Arc;

use axum::{Json, extract::State};
use conduit_service::{
    Error, Services,
    session::{LoginDevice, PasswordLogin},
};
use ruma::api::client::{
    session::{
        login::{self, v3::LoginInfo},
        logout, logout_all, refresh_token,
    },
    uiaa::UserIdentifier,
};

use serde_json::{Value as JsonValue, json};

use crate::{Ruma, RumaResponse, error::ApiError};

/// `GET /login`. Not a ruma handler: ruma writes absent provider icons and
/// brands as `null`, where the spec leaves them out.
pub async fn login_types(State(services): State<Arc<Services>>) -> Json<JsonValue> {
    let mut flows = Vec::new();
    if services.config.sso.password_login_enabled() {
        flows.push(json!({"type": "m.login.password"}));
    }
    let providers: Vec<JsonValue> = services
        .sso
        .providers()
        .map(|p| {
            let mut idp = json!({"id": p.id, "name": p.name});
            // Clients take only mxc icons; an https icon shows on our own pages.
            if let Some(icon) = p.icon.as_deref().filter(|i| i.starts_with("mxc://")) {
                idp["icon"] = icon.into();
            }
            if let Some(brand) = &p.brand {
                idp["brand"] = brand.as_str().into();
            }
            idp
        })
        .collect();
    if !providers.is_empty() {
        flows.push(json!({"type": "m.login.sso", "identity_providers": providers}));
        flows.push(json!({"type": "m.login.token"}));
    }
    if !services.appservices.registry().all().is_empty() {
        flows.push(json!({"type": "m.login.application_service"}));
    }
    Json(json!({ "flows": flows }))
}

pub async fn login(
    State(services): State<Arc<Services>>,
    req: Ruma<login::v3::Request>,
) -> Result<RumaResponse<login::v3::Response>, ApiError> {
    let device = LoginDevice {
        device_id: req.body.device_id.as_deref(),
        display_name: req.body.initial_device_display_name.as_deref(),
        refresh_token: req.body.refresh_token,
        client_ip: req.client_ip.as_deref(),
    };
    let (user_id, session) = match &req.body.login_info {
        LoginInfo::Password(password) => {
            let user = password_login_user(password)?;
            services
                .login_with_password(PasswordLogin {
                    user,
                    password: &password.password,
                    device,
                })
                .await?
        }
        LoginInfo::Token(token) => services.login_with_token(&token.token, device).await?,
        LoginInfo::ApplicationService(login) => {
            let Some(appservice) = req.session.as_ref().and_then(|s| s.appservice.as_deref())
            else {
                return Err(Error::new(
                    conduit_service::ErrorCode::UnknownToken,
                    "m.login.application_service needs an application service's as_token.",
                )
                .into());
            };
            let user = appservice_login_user(login)?;
            services.login_as_appservice_user(appservice, user, device)?
        }
        _ => {
            return Err(Error::new(
                conduit_service::ErrorCode::Unknown,
                "Unsupported login type; see GET /login for the supported ones.",
            )
            .with_status(400)
            .into());
        }
    };
    let mut response = login::v3::Response::new(user_id, session.access_token, session.device_id);
    response.refresh_token = session.refresh_token;
    response.expires_in = session.expires_in_ms.map(std::time::Duration::from_millis);
    Ok(RumaResponse(response))
}

/// Who a password login names: an `m.id.user` identifier or the legacy `user`.
#[allow(deprecated)] // the legacy `user` field is still sent by older clients
fn password_login_user(password: &login::v3::Password) -> Result<&str, ApiError> {
    named_user(password.identifier.as_ref(), password.user.as_deref())
}

/// Who an appservice login names, in the same two ways.
#[allow(deprecated)] // the legacy `user` field is still sent by older bridges
fn appservice_login_user(login: &login::v3::ApplicationService) -> Result<&str, ApiError> {
    named_user(login.identifier.as_ref(), login.user.as_deref())
}

fn named_user<'a>(
    identifier: Option<&'a UserIdentifier>,
    user: Option<&'a str>,
) -> Result<&'a str, ApiError> {
    Ok(match (identifier, user) {
        (Some(UserIdentifier::Matrix(id)), _) => id.user.as_str(),
        (None, Some(user)) => user,
        (Some(_), _) => {
            return Err(Error::new(
                conduit_service::ErrorCode::Unknown,
                "Only m.id.user identifiers are supported.",
            )
            .with_status(400)
            .into());
        }
        (None, None) => return Err(Error::bad_json("Missing identifier.").into()),
    })
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
        .delete_devices(&sender.user_id, &[&sender.device_id])
        .await?;
    Ok(RumaResponse(logout::v3::Response::new()))
}

pub async fn logout_all(
    State(services): State<Arc<Services>>,
    req: Ruma<logout_all::v3::Request, true>,
) -> Result<RumaResponse<logout_all::v3::Response>, ApiError> {
    services.logout_all(&req.sender()?.user_id).await?;
    Ok(RumaResponse(logout_all::v3::Response::new()))
}
