//! User profiles: the whole profile and single fields (`displayname`,
//! `avatar_url` and, since v1.16, custom fields).

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{Error, ErrorCode, Services};
use ruma::{
    UserId,
    api::client::profile::{
        delete_profile_field, get_profile, get_profile_field, set_profile_field,
    },
    profile::ProfileFieldValue,
};

use crate::{Ruma, RumaResponse, error::ApiError};

/// The spec's limit on a whole profile, in bytes of JSON.
const MAX_PROFILE_BYTES: usize = 64 * 1024;

async fn known_user(services: &Services, user_id: &UserId) -> Result<(), ApiError> {
    // An appservice may make the user on being asked.
    let found = services.local_user_asking_appservices(user_id).await?
        && services
            .users
            .account(user_id)?
            .is_some_and(|a| !a.deactivated);
    if found {
        Ok(())
    } else {
        Err(Error::not_found("Profile not found.").into())
    }
}

fn own_profile(req_user: &UserId, sender: &UserId) -> Result<(), ApiError> {
    if req_user == sender {
        Ok(())
    } else {
        Err(Error::forbidden("You cannot change another user's profile.").into())
    }
}

pub async fn get_profile(
    State(services): State<Arc<Services>>,
    req: Ruma<get_profile::v3::Request, true>,
) -> Result<RumaResponse<get_profile::v3::Response>, ApiError> {
    let user = &req.body.user_id;
    let fields = if services.users.is_local(user) {
        known_user(&services, user).await?;
        services.users.profile(user)?
    } else {
        services
            .remote_profile(user, None)
            .await?
            .into_iter()
            .collect()
    };
    let response: get_profile::v3::Response = fields.into_iter().collect();
    Ok(RumaResponse(response))
}

pub async fn get_field(
    State(services): State<Arc<Services>>,
    req: Ruma<get_profile_field::v3::Request, true>,
) -> Result<RumaResponse<get_profile_field::v3::Response>, ApiError> {
    let user = &req.body.user_id;
    let field = req.body.field.as_str();
    let value = if services.users.is_local(user) {
        known_user(&services, user).await?;
        services.users.profile_field(user, field)?
    } else {
        services
            .remote_profile(user, Some(field))
            .await?
            .remove(field)
    }
    .ok_or_else(|| Error::not_found("This profile field is not set."))?;
    let value = ProfileFieldValue::new(field, value).map_err(Error::internal)?;
    Ok(RumaResponse(get_profile_field::v3::Response::new(value)))
}

/// A custom profile key's grammar (v1.16): namespaced, lower case.
fn valid_field_name(name: &str) -> bool {
    if matches!(name, "avatar_url" | "displayname" | "m.tz") {
        return true;
    }
    let mut parts = name.split('.');
    let segment_ok = |seg: &str| {
        let mut chars = seg.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    parts.clone().count() >= 2 && parts.all(segment_ok)
}

/// Guests may change their display name and nothing else of their profile.
fn guest_may_change(
    session: &conduit_service::users::Session,
    field: &str,
) -> Result<(), ApiError> {
    if session.is_guest && field != "displayname" {
        return Err(Error::new(
            ErrorCode::GuestAccessForbidden,
            "Guests may only change their display name.",
        )
        .into());
    }
    Ok(())
}

pub async fn set_field(
    State(services): State<Arc<Services>>,
    req: Ruma<set_profile_field::v3::Request, true>,
) -> Result<RumaResponse<set_profile_field::v3::Response>, ApiError> {
    let user_id = &req.body.user_id;
    let sender = req.sender()?;
    own_profile(user_id, &sender.user_id)?;
    let field = req.body.value.field_name();
    let field = field.as_str();
    guest_may_change(sender, field)?;
    if field.len() > 255 {
        return Err(Error::new(
            ErrorCode::KeyTooLarge,
            "Profile keys are at most 255 bytes.",
        )
        .into());
    }
    if !valid_field_name(field) {
        return Err(Error::bad_json(format!("{field:?} is not a valid profile key.")).into());
    }
    let value = req.body.value.value();
    // Clients clear a name or avatar by setting it empty; custom fields keep
    // what they are given.
    let cleared =
        matches!(field, "displayname" | "avatar_url") && value.as_str().is_some_and(str::is_empty);
    let mut size = 0;
    for (name, existing) in services.users.profile(user_id)? {
        if name != field {
            size += name.len() + existing.to_string().len();
        }
    }
    if size + field.len() + value.to_string().len() > MAX_PROFILE_BYTES {
        return Err(Error::new(
            ErrorCode::ProfileTooLarge,
            "The profile would exceed 64 KiB.",
        )
        .into());
    }
    let stored = (!cleared).then_some(value.as_ref());
    services.users.set_profile_field(user_id, field, stored)?;
    Ok(RumaResponse(set_profile_field::v3::Response::new()))
}

pub async fn delete_field(
    State(services): State<Arc<Services>>,
    req: Ruma<delete_profile_field::v3::Request, true>,
) -> Result<RumaResponse<delete_profile_field::v3::Response>, ApiError> {
    let sender = req.sender()?;
    own_profile(&req.body.user_id, &sender.user_id)?;
    guest_may_change(sender, req.body.field.as_str())?;
    services
        .users
        .set_profile_field(&req.body.user_id, req.body.field.as_str(), None)?;
    Ok(RumaResponse(delete_profile_field::v3::Response::new()))
}
