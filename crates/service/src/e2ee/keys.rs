//! Device keys: a device's identity keys (signed by itself), its one-time
//! keys (each handed out once) and its fallback key per algorithm (handed
//! out when the one-time keys run out, until the device uploads a new one).

use std::collections::BTreeMap;

use conduit_storage::{KeyPrefix, Str};
use ruma::{DeviceId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as JsonValue, json};

use super::{device_lists::DeviceUpdate, merge_signatures, signed_by, signed_part};
use crate::{Error, ErrorCode, Result, Services, tables, utils};

/// A device's fallback key for one algorithm (table `fallback_keys`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct FallbackKey {
    pub key_id: String,
    pub key: JsonValue,
    /// Handed out at least once: the device should upload a new one.
    pub used: bool,
}

/// What `POST /keys/upload` carries (each part optional).
#[derive(Default)]
pub struct KeyUpload {
    pub device_keys: Option<JsonValue>,
    /// `"algorithm:key id"` -> key.
    pub one_time_keys: Map<String, JsonValue>,
    pub fallback_keys: Map<String, JsonValue>,
}

/// One-time keys a device may keep on the server; clients keep about 50.
const MAX_ONE_TIME_KEYS: usize = 1000;

/// The `400` for a key that is not what it claims to be.
fn invalid_signature(what: &str) -> Error {
    Error::new(ErrorCode::InvalidSignature, what.to_owned())
}

/// The ed25519 key a device signs with, from its identity keys.
pub(crate) fn device_signing_key<'a>(keys: &'a JsonValue, device_id: &str) -> Option<&'a str> {
    keys.get("keys")?
        .get(format!("ed25519:{device_id}"))?
        .as_str()
}

/// Checks uploaded identity keys: they are the uploading device's, and the
/// device signed them with the ed25519 key they name.
fn check_device_keys(keys: &JsonValue, user_id: &UserId, device_id: &DeviceId) -> Result<()> {
    if keys.get("user_id").and_then(JsonValue::as_str) != Some(user_id.as_str())
        || keys.get("device_id").and_then(JsonValue::as_str) != Some(device_id.as_str())
    {
        return Err(Error::invalid_param(
            "The device keys' user_id and device_id must be the uploading device's.",
        ));
    }
    if !keys.get("algorithms").is_some_and(JsonValue::is_array) {
        return Err(Error::bad_json("The device keys lack their algorithms."));
    }
    let signing_key = device_signing_key(keys, device_id.as_str())
        .ok_or_else(|| Error::bad_json("The device keys lack the device's ed25519 key."))?;
    let key_id = format!("ed25519:{device_id}");
    if !signed_by(keys, user_id.as_str(), &key_id, signing_key) {
        return Err(invalid_signature(
            "The device keys are not signed by the device's own ed25519 key.",
        ));
    }
    Ok(())
}

/// `algorithm:key id` split at its colon.
fn algorithm_of(key_id: &str) -> Result<&str> {
    match key_id.split_once(':') {
        Some((algorithm, id)) if !algorithm.is_empty() && !id.is_empty() => Ok(algorithm),
        _ => Err(Error::invalid_param(format!(
            "{key_id:?} is not an \"algorithm:key id\"."
        ))),
    }
}

impl Services {
    /// `POST /keys/upload`: stores what a device uploads and answers how
    /// many one-time keys it has per algorithm. New identity keys are news
    /// for everyone who shares a room with the user.
    pub async fn upload_keys(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        upload: KeyUpload,
    ) -> Result<BTreeMap<String, u64>> {
        let _lock = self.user_locks.lock(user_id).await;
        if self.devices.get(user_id, device_id)?.is_none() {
            return Err(Error::not_found("Unknown device."));
        }
        let device_key = (user_id.as_str(), device_id.as_str());
        let mut batch = self.db.batch();
        let mut changed = None;
        if let Some(keys) = upload.device_keys {
            check_device_keys(&keys, user_id, device_id)?;
            let stored = self.db.get(&tables::DEVICE_KEYS, device_key)?;
            let new = match stored {
                // The same keys again: keep the signatures cross-signing added.
                Some(mut stored) if signed_part(&stored) == signed_part(&keys) => {
                    let before = stored.clone();
                    merge_signatures(&mut stored, &keys);
                    (stored != before).then_some(stored)
                }
                _ => Some(keys),
            };
            if let Some(keys) = new {
                batch.put(&tables::DEVICE_KEYS, device_key, &keys)?;
                changed = Some(keys);
            }
        }
        let held = self.one_time_key_counts(user_id, device_id)?;
        let mut total: usize = held.values().map(|&n| n as usize).sum();
        for (key_id, key) in &upload.one_time_keys {
            algorithm_of(key_id)?;
            let row = (user_id.as_str(), device_id.as_str(), key_id.as_str());
            match self.db.get(&tables::ONE_TIME_KEYS, row)? {
                Some(existing) if existing == *key => continue,
                Some(_) => {
                    // Synapse's answer: a key id names one key for good.
                    return Err(Error::invalid_param(format!(
                        "One-time key {key_id} already exists with other content."
                    )));
                }
                None => {}
            }
            total += 1;
            if total > MAX_ONE_TIME_KEYS {
                return Err(Error::invalid_param(format!(
                    "A device keeps at most {MAX_ONE_TIME_KEYS} one-time keys on the server."
                )));
            }
            batch.put(&tables::ONE_TIME_KEYS, row, key)?;
        }
        let mut fallbacks: BTreeMap<&str, (&String, &JsonValue)> = BTreeMap::new();
        for (key_id, key) in &upload.fallback_keys {
            if fallbacks
                .insert(algorithm_of(key_id)?, (key_id, key))
                .is_some()
            {
                return Err(Error::invalid_param(
                    "A device has one fallback key per algorithm.",
                ));
            }
        }
        for (algorithm, (key_id, key)) in fallbacks {
            let row = (user_id.as_str(), device_id.as_str(), algorithm);
            let same = self
                .db
                .get(&tables::FALLBACK_KEYS, row)?
                .is_some_and(|old| old.key_id == *key_id && old.key == *key);
            if !same {
                let record = FallbackKey {
                    key_id: key_id.clone(),
                    key: key.clone(),
                    used: false,
                };
                batch.put(&tables::FALLBACK_KEYS, row, &record)?;
            }
        }
        match changed {
            Some(keys) => {
                let update = DeviceUpdate::changed(device_id.as_str(), keys);
                self.commit_key_change(batch, user_id, &[update], None)?;
            }
            None => self.db.write(batch)?,
        }
        self.note_key_counts(user_id, device_id);
        self.one_time_key_counts(user_id, device_id)
    }

    /// How many unclaimed one-time keys a device has, per algorithm.
    pub fn one_time_key_counts(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<BTreeMap<String, u64>> {
        let prefix = KeyPrefix::new()
            .push::<Str>(user_id.as_str())
            .push::<Str>(device_id.as_str());
        let mut counts = BTreeMap::new();
        for row in self.db.scan_prefix(&tables::ONE_TIME_KEYS, &prefix)? {
            let ((_, _, key_id), _) = row?;
            if let Some((algorithm, _)) = key_id.split_once(':') {
                *counts.entry(algorithm.to_owned()).or_default() += 1;
            }
        }
        Ok(counts)
    }

    /// [`Self::one_time_key_counts`] as clients are told them: a missing
    /// count reads as "unknown", so, as Synapse does, the count of
    /// `signed_curve25519` keys is always there.
    pub fn reported_key_counts(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<BTreeMap<String, u64>> {
        let mut counts = self.one_time_key_counts(user_id, device_id)?;
        counts.entry("signed_curve25519".to_owned()).or_insert(0);
        Ok(counts)
    }

    /// The algorithms of a device's fallback keys not handed out yet.
    pub fn unused_fallback_key_types(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<Vec<String>> {
        let prefix = KeyPrefix::new()
            .push::<Str>(user_id.as_str())
            .push::<Str>(device_id.as_str());
        let mut types = Vec::new();
        for row in self.db.scan_prefix(&tables::FALLBACK_KEYS, &prefix)? {
            let ((_, _, algorithm), key) = row?;
            if !key.used {
                types.push(algorithm);
            }
        }
        Ok(types)
    }

    /// The identity keys of a user's devices (`devices` empty: all of
    /// them), as `/keys/query` shows them: with the device's display name
    /// for local askers, without it for other servers.
    pub(crate) fn device_keys_of(
        &self,
        user_id: &UserId,
        devices: &[String],
        with_names: bool,
    ) -> Result<Map<String, JsonValue>> {
        let mut found = Map::new();
        let prefix = KeyPrefix::new().push::<Str>(user_id.as_str());
        let local = user_id.server_name() == self.config.server_name;
        for row in self.db.scan_prefix(&tables::DEVICE_KEYS, &prefix)? {
            let ((_, device_id), mut keys) = row?;
            if !devices.is_empty() && !devices.contains(&device_id) {
                continue;
            }
            if local && with_names {
                let name = self
                    .devices
                    .get(user_id, device_id.as_str().into())?
                    .and_then(|d| d.display_name);
                if let Some(name) = name {
                    keys["unsigned"] = json!({ "device_display_name": name });
                }
            }
            found.insert(device_id, keys);
        }
        Ok(found)
    }

    /// Hands out one key per asked device: a one-time key (gone once
    /// given), else the fallback key (given again until replaced).
    pub(crate) fn claim_local_keys(
        &self,
        claims: &Map<String, JsonValue>,
    ) -> Result<Map<String, JsonValue>> {
        // One claim at a time: a one-time key must reach one claimer only.
        let _claiming = utils::locked(&self.key_claims);
        let mut batch = self.db.batch();
        let mut answer = Map::new();
        for (user, devices) in claims {
            let (Ok(user_id), Some(devices)) =
                (<&UserId>::try_from(user.as_str()), devices.as_object())
            else {
                continue;
            };
            if user_id.server_name() != self.config.server_name {
                continue;
            }
            let mut claimed = Map::new();
            for (device, algorithm) in devices {
                let Some(algorithm) = algorithm.as_str() else {
                    continue;
                };
                if let Some((key_id, key)) =
                    self.take_key(&mut batch, user_id.as_str(), device, algorithm)?
                {
                    claimed.insert(device.clone(), json!({ key_id: key }));
                }
            }
            if !claimed.is_empty() {
                answer.insert(user.clone(), claimed.into());
            }
        }
        self.db.write(batch)?;
        for (user, devices) in &answer {
            let (Ok(user_id), Some(devices)) =
                (<&UserId>::try_from(user.as_str()), devices.as_object())
            else {
                continue;
            };
            for device in devices.keys() {
                self.note_key_counts(user_id, device.as_str().into());
            }
        }
        Ok(answer)
    }

    fn take_key(
        &self,
        batch: &mut conduit_storage::Batch<'_>,
        user: &str,
        device: &str,
        algorithm: &str,
    ) -> Result<Option<(String, JsonValue)>> {
        // Key ids sort within the device's rows; those of the algorithm
        // start with "algorithm:", so the scan starts there.
        let device_prefix = KeyPrefix::new().push::<Str>(user).push::<Str>(device);
        let wanted = format!("{algorithm}:");
        let mut start = device_prefix.as_bytes().to_vec();
        start.extend_from_slice(wanted.as_bytes());
        let first = self
            .db
            .scan_from(&tables::ONE_TIME_KEYS, &device_prefix, &start, true)?
            .next()
            .transpose()?;
        if let Some(((_, _, key_id), key)) = first
            && key_id.starts_with(&wanted)
        {
            batch.delete(&tables::ONE_TIME_KEYS, (user, device, key_id.as_str()))?;
            return Ok(Some((key_id, key)));
        }
        let row = (user, device, algorithm);
        let Some(mut fallback) = self.db.get(&tables::FALLBACK_KEYS, row)? else {
            return Ok(None);
        };
        if !fallback.used {
            fallback.used = true;
            batch.put(&tables::FALLBACK_KEYS, row, &fallback)?;
        }
        Ok(Some((fallback.key_id, fallback.key)))
    }
}

/// Deletes a device's end-to-end state inside `batch`: its keys, its
/// pending to-device messages. Whoever deletes the device announces it.
pub(crate) fn remove_device_keys_into(
    db: &conduit_storage::Database,
    batch: &mut conduit_storage::Batch<'_>,
    user_id: &str,
    device_id: &str,
) -> Result<()> {
    batch.delete(&tables::DEVICE_KEYS, (user_id, device_id))?;
    let prefix = KeyPrefix::new().push::<Str>(user_id).push::<Str>(device_id);
    for row in db.scan_prefix(&tables::ONE_TIME_KEYS, &prefix)? {
        let ((_, _, key_id), _) = row?;
        batch.delete(
            &tables::ONE_TIME_KEYS,
            (user_id, device_id, key_id.as_str()),
        )?;
    }
    for row in db.scan_prefix(&tables::FALLBACK_KEYS, &prefix)? {
        let ((_, _, algorithm), _) = row?;
        batch.delete(
            &tables::FALLBACK_KEYS,
            (user_id, device_id, algorithm.as_str()),
        )?;
    }
    for row in db.scan_prefix(&tables::TO_DEVICE, &prefix)? {
        let ((_, _, position), _) = row?;
        batch.delete(&tables::TO_DEVICE, (user_id, device_id, position))?;
    }
    Ok(())
}
