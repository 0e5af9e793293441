//! Dehydrated devices (MSC3814): a device whose private keys the client
//! stores on the server, encrypted, so others can encrypt for the user
//! while all their real devices are offline. It is a device like any other
//! (keys, one-time keys, to-device queue) without an access token; a new
//! login rehydrates it by reading its to-device messages.

use conduit_storage::{KeyPrefix, Str};
use ruma::{DeviceId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value as JsonValue, json};

use super::{device_lists::DeviceUpdate, keys::KeyUpload};
use crate::{Error, Result, Services, tables, users::DeviceRecord, utils};

/// A user's dehydrated device (table `dehydrated_devices`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct DehydratedDevice {
    pub device_id: String,
    /// Opaque to the server: the client's encrypted pickle.
    pub device_data: JsonValue,
}

/// What `PUT /dehydrated_device` carries.
pub struct NewDehydratedDevice {
    pub device_id: String,
    pub device_data: JsonValue,
    pub display_name: Option<String>,
    pub keys: KeyUpload,
}

impl Services {
    pub fn dehydrated_device(&self, user_id: &UserId) -> Result<Option<DehydratedDevice>> {
        Ok(self.db.get(&tables::DEHYDRATED_DEVICES, user_id.as_str())?)
    }

    pub(crate) fn dehydrated_device_id(&self, user_id: &UserId) -> Result<Option<String>> {
        Ok(self.dehydrated_device(user_id)?.map(|d| d.device_id))
    }

    /// Stores a new dehydrated device with its keys, replacing the old one
    /// (which is deleted like any device).
    pub async fn put_dehydrated_device(
        &self,
        user_id: &UserId,
        device: NewDehydratedDevice,
    ) -> Result<String> {
        let device_id: &DeviceId = device.device_id.as_str().into();
        {
            let _lock = self.user_locks.lock(user_id).await;
            let old = self.dehydrated_device(user_id)?;
            if old
                .as_ref()
                .is_none_or(|old| old.device_id != device.device_id)
                && self.devices.get(user_id, device_id)?.is_some()
            {
                return Err(Error::invalid_param(
                    "That device id belongs to a device that is not dehydrated.",
                ));
            }
            let mut batch = self.db.batch();
            let mut updates = Vec::new();
            if let Some(old) = &old {
                self.devices
                    .remove_into(&mut batch, user_id, old.device_id.as_str().into())?;
                updates.push(DeviceUpdate::deleted(&old.device_id));
            }
            let record = DeviceRecord {
                display_name: device.display_name.clone(),
                created_at: utils::now_ms(),
                ..Default::default()
            };
            batch.put(
                &tables::DEVICES,
                (user_id.as_str(), device.device_id.as_str()),
                &record,
            )?;
            let dehydrated = DehydratedDevice {
                device_id: device.device_id.clone(),
                device_data: device.device_data,
            };
            batch.put(&tables::DEHYDRATED_DEVICES, user_id.as_str(), &dehydrated)?;
            if updates.is_empty() {
                self.db.write(batch)?;
            } else {
                self.commit_key_change(batch, user_id, &updates, None)?;
            }
        }
        self.upload_keys(user_id, device_id, device.keys).await?;
        Ok(device.device_id)
    }

    /// Deletes the dehydrated device; its id, or `404`.
    pub async fn delete_dehydrated_device(&self, user_id: &UserId) -> Result<String> {
        let _lock = self.user_locks.lock(user_id).await;
        let old = self
            .dehydrated_device(user_id)?
            .ok_or_else(|| Error::not_found("No dehydrated device."))?;
        let mut batch = self.db.batch();
        batch.delete(&tables::DEHYDRATED_DEVICES, user_id.as_str())?;
        self.devices
            .remove_into(&mut batch, user_id, old.device_id.as_str().into())?;
        self.commit_key_change(
            batch,
            user_id,
            &[DeviceUpdate::deleted(&old.device_id)],
            None,
        )?;
        Ok(old.device_id)
    }

    /// `POST /dehydrated_device/{id}/events` (or `GET ...?from=`): a page
    /// of the device's to-device messages from `next_batch` on. Earlier
    /// pages are kept (MSC3814: a rehydration that is cut off can start
    /// again); they go with the device when a new one replaces it.
    pub fn dehydrated_device_events(
        &self,
        user_id: &UserId,
        device_id: &str,
        next_batch: Option<&str>,
    ) -> Result<JsonValue> {
        if self.dehydrated_device_id(user_id)?.as_deref() != Some(device_id) {
            return Err(Error::forbidden("That is not your dehydrated device."));
        }
        let from = match next_batch {
            Some(token) => token
                .parse::<u64>()
                .map_err(|_| Error::invalid_param("Invalid next_batch token."))?,
            None => 0,
        };
        let prefix = KeyPrefix::new()
            .push::<Str>(user_id.as_str())
            .push::<Str>(device_id);
        let mut start = prefix.as_bytes().to_vec();
        start.extend_from_slice(&from.to_be_bytes());
        let mut events = Vec::new();
        let mut next = from;
        for row in self
            .db
            .scan_from(&tables::TO_DEVICE, &prefix, &start, true)?
            .take(super::to_device::PER_SYNC)
        {
            let ((_, _, position), message) = row?;
            events.push(json!({
                "sender": message.sender,
                "type": message.kind,
                "content": message.content,
            }));
            next = position + 1;
        }
        // The page after the last one is empty and has no `next_batch`:
        // matrix-js-sdk pages until it is absent, matrix-rust-sdk until a
        // page is empty.
        if events.is_empty() {
            return Ok(json!({ "events": events }));
        }
        Ok(json!({ "events": events, "next_batch": next.to_string() }))
    }
}
