//! Logging in and out.

use ruma::{DeviceId, OwnedUserId, UserId};

use crate::{
    Error, ErrorCode, Result, Services,
    users::{NewSession, devices::SessionRequest},
};

/// The device a login asks for, as parsed from the client.
pub struct LoginDevice<'a> {
    pub device_id: Option<&'a DeviceId>,
    pub display_name: Option<&'a str>,
    pub refresh_token: bool,
    pub client_ip: Option<&'a str>,
}

/// A password login, as parsed from the client.
pub struct PasswordLogin<'a> {
    /// What the user typed: a localpart or a full user id.
    pub user: &'a str,
    pub password: &'a str,
    pub device: LoginDevice<'a>,
}

impl Services {
    pub async fn login_with_password(
        &self,
        login: PasswordLogin<'_>,
    ) -> Result<(OwnedUserId, NewSession)> {
        if !self.config.sso.password_login_enabled() {
            return Err(Error::new(
                ErrorCode::Unknown,
                "Password login is turned off on this server; sign in with single sign-on.",
            )
            .with_status(400));
        }
        let Some(user_id) = self.users.resolve_login_name(login.user) else {
            return Err(Error::forbidden("Invalid username or password."));
        };
        // Under the user's lock: a password change or deactivation that
        // lands meanwhile either comes first (and this check fails) or after
        // (and revokes the token made here).
        let _lock = self.user_locks.lock(&user_id).await;
        self.users.check_password(&user_id, login.password).await?;
        let session = self.open_session(&user_id, login.device)?;
        Ok((user_id, session))
    }

    /// `m.login.token`: a single-use token from single sign-on.
    pub async fn login_with_token(
        &self,
        token: &str,
        device: LoginDevice<'_>,
    ) -> Result<(OwnedUserId, NewSession)> {
        let Some(user_id) = self.sso.take_login_token(token) else {
            return Err(Error::forbidden("Invalid login token."));
        };
        let _lock = self.user_locks.lock(&user_id).await;
        if self.users.account(&user_id)?.is_none_or(|a| a.deactivated) {
            return Err(Error::forbidden("Invalid login token."));
        }
        let session = self.open_session(&user_id, device)?;
        Ok((user_id, session))
    }

    /// A new device (or a new token for a named one) after a login.
    pub(crate) fn open_session(
        &self,
        user_id: &UserId,
        device: LoginDevice<'_>,
    ) -> Result<NewSession> {
        let is_guest = self.users.account(user_id)?.is_some_and(|a| a.is_guest);
        let session = self.devices.create_session(SessionRequest {
            user_id,
            device_id: device.device_id,
            display_name: device.display_name,
            with_refresh_token: device.refresh_token,
            is_guest,
            client_ip: device.client_ip,
            oauth_client: None,
        })?;
        tracing::info!(%user_id, device_id = %session.device_id, "logged in");
        Ok(session)
    }
}
