//! The users an appservice makes and signs in as: `POST /register` and
//! `POST /login` with `m.login.application_service`. Its users have no
//! password; the `as_token` is what stands for them.

use ruma::{OwnedUserId, UserId};

use super::Appservice;
use crate::{
    Error, ErrorCode, Result, Services,
    registration::Registered,
    session::LoginDevice,
    users::{NewSession, devices::SessionRequest},
};

impl Services {
    /// `m.login.application_service` registration of `username` (a
    /// localpart or a user id) in the appservice's namespace.
    pub fn register_appservice_user(
        &self,
        appservice: &Appservice,
        username: Option<&str>,
        device: LoginDevice<'_>,
        inhibit_login: bool,
    ) -> Result<Registered> {
        let username = username.ok_or_else(|| {
            Error::new(
                ErrorCode::MissingParam,
                "An appservice registers a username.",
            )
        })?;
        let user_id = self.appservice_user_id(username)?;
        if !appservice.is_user(&user_id) {
            return Err(Error::new(
                ErrorCode::Exclusive,
                "This user ID is outside the application service's namespace.",
            ));
        }
        // Another appservice may claim it exclusively.
        self.check_user_namespace(&user_id, Some(appservice))?;
        let session = self.users.create(&user_id, None, false, |batch, account| {
            account.appservice_id = Some(appservice.id().to_owned());
            if inhibit_login {
                return Ok(None);
            }
            let session = self.devices.create_session_into(
                batch,
                SessionRequest {
                    user_id: &user_id,
                    device_id: device.device_id,
                    display_name: device.display_name,
                    with_refresh_token: device.refresh_token,
                    is_guest: false,
                    client_ip: device.client_ip,
                    oauth_client: None,
                },
            )?;
            Ok(Some(session))
        })?;
        tracing::info!(appservice = appservice.id(), %user_id, "an appservice registered a user");
        Ok(Registered { user_id, session })
    }

    /// `m.login.application_service`: a device for a user of the
    /// appservice's namespace (a bridge's encryption needs one).
    pub fn login_as_appservice_user(
        &self,
        appservice: &Appservice,
        user: &str,
        device: LoginDevice<'_>,
    ) -> Result<(OwnedUserId, NewSession)> {
        let user_id = self
            .users
            .resolve_login_name(user)
            .filter(|user_id| appservice.is_user(user_id))
            .ok_or_else(|| {
                Error::forbidden("This user is outside the application service's namespace.")
            })?;
        if self.users.account(&user_id)?.is_none_or(|a| a.deactivated) {
            return Err(Error::forbidden(
                "The application service has not registered this user.",
            ));
        }
        let session = self.open_session(&user_id, device)?;
        Ok((user_id, session))
    }

    /// The user an appservice names: a localpart or a local user id, of the
    /// characters user ids may have (`_` first is allowed: puppets use it).
    fn appservice_user_id(&self, username: &str) -> Result<OwnedUserId> {
        let invalid = |why: &str| Error::new(ErrorCode::InvalidUsername, why);
        let user_id = if username.starts_with('@') {
            UserId::parse(username).map_err(|_| invalid("Invalid user ID."))?
        } else {
            UserId::parse(format!("@{username}:{}", self.config.server_name))
                .map_err(|_| invalid("Invalid username."))?
        };
        if !self.users.is_local(&user_id) {
            return Err(invalid("The user ID is not of this server."));
        }
        let valid = user_id.localpart().bytes().all(
            |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'),
        );
        if !valid || user_id.localpart().is_empty() || user_id.as_str().len() > 255 {
            return Err(invalid(
                "The username may only contain a-z, 0-9 and . _ = - / +",
            ));
        }
        Ok(user_id)
    }
}
