//! Changes to an account and its devices that must not race: each runs
//! under the user's lock and writes one batch.

use ruma::{DeviceId, UserId};

use crate::{
    Error, Result, Services,
    e2ee::device_lists::DeviceUpdate,
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
        let mut removed = Vec::new();
        self.users.update_account(user_id, |record, batch| {
            record.password_hash = Some(hash);
            if logout_devices {
                removed = self.devices.remove_all_into(batch, user_id, keep_device)?;
            }
            Ok(())
        })?;
        if logout_devices {
            self.oauth_forget_codes(user_id);
        }
        self.announce_removed_devices(self.db.batch(), user_id, &removed)?;
        tracing::info!(%user_id, "password changed");
        Ok(())
    }

    pub async fn deactivate(&self, user_id: &UserId) -> Result<()> {
        let _lock = self.user_locks.lock(user_id).await;
        let removed = self.users.deactivate(user_id, &self.devices)?;
        self.remove_pushers(user_id, |_| true)?;
        self.oauth_forget_codes(user_id);
        self.announce_removed_devices(self.db.batch(), user_id, &removed)?;
        tracing::info!(%user_id, "account deactivated");
        Ok(())
    }

    /// Deletes devices (their tokens, keys and to-device messages) in one
    /// batch, which also tells everyone who shares a room with the user.
    pub async fn delete_devices(
        &self,
        user_id: &UserId,
        devices: &[impl AsRef<DeviceId>],
    ) -> Result<()> {
        let _lock = self.user_locks.lock(user_id).await;
        let mut batch = self.db.batch();
        let mut removed = Vec::new();
        for device_id in devices {
            let device_id = device_id.as_ref();
            if self.devices.get(user_id, device_id)?.is_some() {
                removed.push(device_id.to_string());
            }
            self.devices.remove_into(&mut batch, user_id, device_id)?;
        }
        self.announce_removed_devices(batch, user_id, &removed)
    }

    /// `DELETE /devices/{id}`: like [`Self::delete_devices`], but an
    /// unknown device is `404`.
    pub async fn delete_known_device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<()> {
        if self.devices.get(user_id, device_id)?.is_none() {
            return Err(Error::not_found("Unknown device."));
        }
        self.delete_devices(user_id, &[device_id]).await
    }

    /// Logs out every device of the user.
    pub async fn logout_all(&self, user_id: &UserId) -> Result<()> {
        let _lock = self.user_locks.lock(user_id).await;
        let mut batch = self.db.batch();
        let removed = self.devices.remove_all_into(&mut batch, user_id, None)?;
        self.oauth_forget_codes(user_id);
        self.announce_removed_devices(batch, user_id, &removed)
    }

    /// Writes `batch` (which deleted `removed`) as a device list change.
    fn announce_removed_devices(
        &self,
        batch: conduit_storage::Batch<'_>,
        user_id: &UserId,
        removed: &[String],
    ) -> Result<()> {
        for device in removed {
            self.to_device_pending_forget(user_id.as_str(), device);
        }
        // A device's pushers go with it (a logged-out phone must stop ringing).
        self.remove_pushers(user_id, |p| {
            p.device_id.as_ref().is_some_and(|d| removed.contains(d))
        })?;
        if removed.is_empty() {
            return Ok(self.db.write(batch)?);
        }
        let mut batch = batch;
        // A dehydrated device deleted like any other takes its record along.
        if let Some(dehydrated) = self.dehydrated_device_id(user_id)?
            && removed.contains(&dehydrated)
        {
            batch.delete(&crate::tables::DEHYDRATED_DEVICES, user_id.as_str())?;
        }
        let updates: Vec<DeviceUpdate> = removed.iter().map(|d| DeviceUpdate::deleted(d)).collect();
        self.commit_key_change(batch, user_id, &updates, None)?;
        Ok(())
    }

    pub async fn rename_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        name: Option<String>,
    ) -> Result<()> {
        let _lock = self.user_locks.lock(user_id).await;
        let renamed = name.is_some();
        self.devices.set_display_name(user_id, device_id, name)?;
        // Local clients show device names from `/keys/query`: a rename is
        // news for them (other servers are not told names).
        if renamed
            && let Some(keys) = self.db.get(
                &crate::tables::DEVICE_KEYS,
                (user_id.as_str(), device_id.as_str()),
            )?
        {
            let update = DeviceUpdate::changed(device_id.as_str(), keys);
            self.commit_key_change(self.db.batch(), user_id, &[update], None)?;
        }
        Ok(())
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
