//! Requests made with an `as_token`: the appservice acts as its sender,
//! or as the user of its namespaces that `?user_id=` names (masquerading),
//! on the device `?device_id=` names (MSC3202/MSC4190) if any.

use std::sync::Arc;

use ruma::{OwnedDeviceId, OwnedUserId};

use super::Appservice;
use crate::{Error, Result, Services, users::Session};

/// The device of an appservice request that names none. It is no device
/// of the user's device list: what needs a real device (end-to-end keys)
/// asks for one with `device_id`.
pub const NO_DEVICE: &str = "_appservice";

impl Services {
    /// The session of a request whose token is an appservice's `as_token`;
    /// `None` when it is no appservice's. `query` is the request's query
    /// string (`user_id`, `device_id`), read only when `masquerade` (the
    /// registration and login endpoints name a user who may not exist yet
    /// and act as the appservice itself; bridges send `user_id` there too).
    pub fn appservice_session(
        &self,
        token: &str,
        query: Option<&str>,
        masquerade: bool,
    ) -> Result<Option<Session>> {
        let registry = self.appservices.registry();
        let Some(appservice) = registry.by_as_token(token) else {
            return Ok(None);
        };
        let mut user_id = None;
        let mut device_id = None;
        let query = if masquerade { query } else { None };
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*key {
                "user_id" => user_id = Some(value.into_owned()),
                "device_id" | "org.matrix.msc3202.device_id" => {
                    device_id = Some(value.into_owned())
                }
                _ => {}
            }
        }
        let user_id = match user_id {
            Some(user) => OwnedUserId::try_from(user)
                .map_err(|_| Error::invalid_param("user_id is not a user ID."))?,
            None => appservice.sender.clone(),
        };
        self.check_masquerade(appservice, &user_id)?;
        let device_id = match device_id {
            Some(device) => {
                let device = OwnedDeviceId::from(device);
                if self.devices.get(&user_id, &device)?.is_none() {
                    return Err(Error::forbidden("The user has no such device."));
                }
                device
            }
            None => OwnedDeviceId::from(NO_DEVICE),
        };
        Ok(Some(Session {
            user_id,
            device_id,
            is_guest: false,
            appservice: Some(appservice.clone()),
        }))
    }

    /// An appservice may act as its sender and the existing, active local
    /// users of its namespaces.
    fn check_masquerade(&self, appservice: &Arc<Appservice>, user_id: &ruma::UserId) -> Result<()> {
        if !self.users.is_local(user_id) || !appservice.is_user(user_id) {
            return Err(Error::forbidden(
                "The application service cannot act as this user: it is outside its namespace.",
            ));
        }
        match self.users.account(user_id)? {
            None => Err(Error::forbidden(
                "The application service has not registered this user.",
            )),
            Some(account) if account.deactivated => Err(Error::new(
                crate::ErrorCode::UserDeactivated,
                "This user has been deactivated.",
            )),
            Some(_) => Ok(()),
        }
    }
}
