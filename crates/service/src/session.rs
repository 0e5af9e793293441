//! Logging in and out.

use ruma::{DeviceId, OwnedUserId};

use crate::{
    Error, Result, Services,
    users::{NewSession, devices::SessionRequest},
};

/// A password login, as parsed from the client.
pub struct PasswordLogin<'a> {
    /// What the user typed: a localpart or a full user id.
    pub user: &'a str,
    pub password: &'a str,
    pub device_id: Option<&'a DeviceId>,
    pub display_name: Option<&'a str>,
    pub refresh_token: bool,
    pub client_ip: Option<&'a str>,
}

impl Services {
    pub async fn login_with_password(
        &self,
        login: PasswordLogin<'_>,
    ) -> Result<(OwnedUserId, NewSession)> {
        let Some(user_id) = self.users.resolve_login_name(login.user) else {
            return Err(Error::forbidden("Invalid username or password."));
        };
        // Under the user's lock: a password change or deactivation that
        // lands meanwhile either comes first (and this check fails) or after
        // (and revokes the token made here).
        let _lock = self.user_locks.lock(&user_id).await;
        self.users.check_password(&user_id, login.password).await?;
        let is_guest = self.users.account(&user_id)?.is_some_and(|a| a.is_guest);
        let session = self.devices.create_session(SessionRequest {
            user_id: &user_id,
            device_id: login.device_id,
            display_name: login.display_name,
            with_refresh_token: login.refresh_token,
            is_guest,
            client_ip: login.client_ip,
        })?;
        tracing::info!(%user_id, device_id = %session.device_id, "logged in");
        Ok((user_id, session))
    }
}
