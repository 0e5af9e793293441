//! Changes to an account and its devices that must not race: each runs
//! under the user's lock and writes one batch.

use ruma::{DeviceId, UserId};

use crate::{
    Error, Result, Services,
    users::{NewSession, password},
};

impl Services {
    /// Sets a new password, and logs out every other device when asked.
    pub async fn change_password(
        &self,
        user_id: &UserId,
        keep_device: Option<&DeviceId>,
        new_password: &str,
        logout_devices: bool,
    ) -> Result<()> {
        let hash = password::hash(new_password.to_owned()).await?;
        let _lock = self.user_locks.lock(user_id).await;
        self.users.update_account(user_id, |record, batch| {
            record.password_hash = Some(hash);
            if logout_devices {
                self.devices.remove_all_into(batch, user_id, keep_device)?;
            }
            Ok(())
        })?;
        tracing::info!(%user_id, "password changed");
        Ok(())
    }

    pub async fn deactivate(&self, user_id: &UserId) -> Result<()> {
        let _lock = self.user_locks.lock(user_id).await;
        self.users.deactivate(user_id, &self.devices)?;
        tracing::info!(%user_id, "account deactivated");
        Ok(())
    }

    /// Deletes devices (and so their tokens) in one batch.
    pub async fn delete_devices(
        &self,
        user_id: &UserId,
        devices: &[impl AsRef<DeviceId>],
    ) -> Result<()> {
        let _lock = self.user_locks.lock(user_id).await;
        let mut batch = self.db.batch();
        for device_id in devices {
            self.devices
                .remove_into(&mut batch, user_id, device_id.as_ref())?;
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// `DELETE /devices/{id}`: like [`Self::delete_devices`], but an
    /// unknown device is `404`.
    pub async fn delete_known_device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<()> {
        let _lock = self.user_locks.lock(user_id).await;
        if self.devices.get(user_id, device_id)?.is_none() {
            return Err(Error::not_found("Unknown device."));
        }
        self.devices.remove(user_id, device_id)
    }

    /// Logs out every device of the user.
    pub async fn logout_all(&self, user_id: &UserId) -> Result<()> {
        let _lock = self.user_locks.lock(user_id).await;
        self.devices.remove_all(user_id, None)
    }

    pub async fn rename_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        name: Option<String>,
    ) -> Result<()> {
        let _lock = self.user_locks.lock(user_id).await;
        self.devices.set_display_name(user_id, device_id, name)
    }

    /// Trades a refresh token for new tokens, under the owner's lock so a
    /// device deleted meanwhile stays deleted.
    pub async fn refresh(&self, refresh_token: &str) -> Result<NewSession> {
        let owner = self.devices.refresh_token_owner(refresh_token)?;
        let _lock = self.user_locks.lock(&owner).await;
        self.devices.refresh(refresh_token)
    }

    /// Reads the user's push rules, lets `change` edit them, stores them.
    pub async fn update_push_rules<T>(
        &self,
        user_id: &UserId,
        change: impl FnOnce(&mut ruma::push::Ruleset) -> Result<T>,
    ) -> Result<T> {
        let _lock = self.user_locks.lock(user_id).await;
        let mut rules = self.account_data.push_rules(user_id)?;
        let result = change(&mut rules)?;
        self.account_data.set_push_rules(user_id, &rules)?;
        self.push_cache.forget_rules(user_id);
        Ok(result)
    }
}
