//! Cross-signing: a user's master key vouches for their self-signing key
//! (which signs their devices) and their user-signing key (which signs
//! other users' master keys). The server checks every signature before it
//! keeps it, so a client can trust what `/keys/query` says only as far as
//! the signatures go, never because the server said so.

use ruma::UserId;
use serde_json::{Map, Value as JsonValue, json};

use super::{
    device_lists::DeviceUpdate, keys::device_signing_key, merge_signatures, signed_by, signed_part,
};
use crate::{Error, ErrorCode, Result, Services, tables};

/// The three kinds of cross-signing key, as `usage` names them.
pub const USAGES: [&str; 3] = ["master", "self_signing", "user_signing"];

/// A cross-signing key's ed25519 public key, if `key` is a well-formed
/// key of `user_id` for `usage`.
pub(crate) fn key_of<'a>(key: &'a JsonValue, user_id: &UserId, usage: &str) -> Option<&'a str> {
    if key.get("user_id").and_then(JsonValue::as_str) != Some(user_id.as_str()) {
        return None;
    }
    let usages = key.get("usage")?.as_array()?;
    if !usages.iter().any(|u| u.as_str() == Some(usage)) {
        return None;
    }
    let keys = key.get("keys")?.as_object()?;
    if keys.len() != 1 {
        return None;
    }
    let (key_id, public) = keys.iter().next()?;
    let public = public.as_str()?;
    (key_id.strip_prefix("ed25519:") == Some(public)).then_some(public)
}

/// An upload of cross-signing keys (`/keys/device_signing/upload`).
#[derive(Default)]
pub struct CrossSigningUpload {
    pub master_key: Option<JsonValue>,
    pub self_signing_key: Option<JsonValue>,
    pub user_signing_key: Option<JsonValue>,
}

impl CrossSigningUpload {
    fn keys(&self) -> [(&'static str, Option<&JsonValue>); 3] {
        [
            ("master", self.master_key.as_ref()),
            ("self_signing", self.self_signing_key.as_ref()),
            ("user_signing", self.user_signing_key.as_ref()),
        ]
    }
}

fn invalid_signature(message: &str) -> Error {
    Error::new(ErrorCode::InvalidSignature, message.to_owned())
}

impl Services {
    /// A user's cross-signing key of `usage`, as stored.
    pub fn cross_signing_key(&self, user_id: &UserId, usage: &str) -> Result<Option<JsonValue>> {
        Ok(self
            .db
            .get(&tables::CROSS_SIGNING_KEYS, (user_id.as_str(), usage))?)
    }

    /// Whether an upload replaces keys the user has: only then does it
    /// need user-interactive auth (the first upload does not, MSC3967, and
    /// neither does uploading the same keys again).
    pub fn cross_signing_upload_replaces(
        &self,
        user_id: &UserId,
        upload: &CrossSigningUpload,
    ) -> Result<bool> {
        for (usage, key) in upload.keys() {
            if let Some(key) = key
                && let Some(stored) = self.cross_signing_key(user_id, usage)?
                && signed_part(&stored) != signed_part(key)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Stores new cross-signing keys after checking them: each is the
    /// user's own, for its usage, and the self-signing and user-signing
    /// keys carry the (new or current) master key's signature.
    pub async fn upload_cross_signing_keys(
        &self,
        user_id: &UserId,
        upload: CrossSigningUpload,
        reauthenticated: bool,
    ) -> Result<()> {
        let _lock = self.user_locks.lock(user_id).await;
        // Checked again under the lock: keys uploaded meanwhile by another
        // request make this one a replacement, which needs the auth.
        if !reauthenticated && self.cross_signing_upload_replaces(user_id, &upload)? {
            return Err(Error::forbidden(
                "Cross-signing keys were uploaded meanwhile; replacing them needs authentication.",
            ));
        }
        let user = user_id.as_str();
        for (usage, key) in upload.keys() {
            if let Some(key) = key
                && key_of(key, user_id, usage).is_none()
            {
                return Err(Error::invalid_param(format!(
                    "The {usage} key must be one ed25519 key of {user_id} with usage {usage}."
                )));
            }
        }
        let master = match &upload.master_key {
            Some(master) => Some(master.clone()),
            None => self.cross_signing_key(user_id, "master")?,
        };
        let master_public = master
            .as_ref()
            .and_then(|m| key_of(m, user_id, "master"))
            .map(str::to_owned);
        for (usage, key) in [
            ("self_signing", upload.self_signing_key.as_ref()),
            ("user_signing", upload.user_signing_key.as_ref()),
        ] {
            let Some(key) = key else { continue };
            let Some(master_public) = &master_public else {
                return Err(Error::invalid_param(format!(
                    "A {usage} key needs a master key to sign it."
                )));
            };
            let key_id = format!("ed25519:{master_public}");
            if !signed_by(key, user, &key_id, master_public) {
                return Err(invalid_signature(&format!(
                    "The {usage} key is not signed by the master key."
                )));
            }
        }
        let mut batch = self.db.batch();
        let mut changed = false;
        for (usage, key) in upload.keys() {
            let Some(key) = key else { continue };
            let stored = self.cross_signing_key(user_id, usage)?;
            if stored.as_ref() == Some(key) {
                continue;
            }
            let mut key = key.clone();
            if let Some(stored) = &stored
                && signed_part(stored) == signed_part(&key)
            {
                merge_signatures(&mut key, stored);
            }
            batch.put(&tables::CROSS_SIGNING_KEYS, (user, usage), &key)?;
            changed = true;
        }
        if changed {
            let update = self.signing_key_update_content(user_id, &upload)?;
            self.commit_key_change(batch, user_id, &[], Some(update))?;
        }
        Ok(())
    }

    /// The `m.signing_key_update` content: the public keys (the
    /// user-signing key stays private to its owner).
    fn signing_key_update_content(
        &self,
        user_id: &UserId,
        upload: &CrossSigningUpload,
    ) -> Result<JsonValue> {
        let mut content = json!({ "user_id": user_id });
        let master = match &upload.master_key {
            Some(key) => Some(key.clone()),
            None => self.cross_signing_key(user_id, "master")?,
        };
        let self_signing = match &upload.self_signing_key {
            Some(key) => Some(key.clone()),
            None => self.cross_signing_key(user_id, "self_signing")?,
        };
        if let Some(master) = master {
            content["master_key"] = master;
        }
        if let Some(self_signing) = self_signing {
            content["self_signing_key"] = self_signing;
        }
        Ok(content)
    }

    /// `POST /keys/signatures/upload`: each signed object's new signatures
    /// are checked and kept; what fails is in the returned `failures` map
    /// (`{user: {key id: error}}`), the rest is stored.
    pub async fn upload_key_signatures(
        &self,
        user_id: &UserId,
        signed: &Map<String, JsonValue>,
    ) -> Result<Map<String, JsonValue>> {
        let _lock = self.user_locks.lock(user_id).await;
        let me = user_id.as_str();
        let mut failures = Map::new();
        let mut batch = self.db.batch();
        let mut own_changes = Vec::new();
        let mut master_changed = false;
        let mut other_changed = false;
        for (target, objects) in signed {
            let Some(objects) = objects.as_object() else {
                continue;
            };
            for (key_id, object) in objects {
                let outcome = if target == me {
                    self.sign_own_key(&mut batch, user_id, key_id, object)
                } else {
                    self.sign_other_master_key(&mut batch, user_id, target, key_id, object)
                };
                match outcome {
                    Ok(Signed::Device(update)) => own_changes.push(update),
                    Ok(Signed::Master) => master_changed = true,
                    Ok(Signed::Other) => other_changed = true,
                    Err(e) => {
                        let (code, message) = match &e {
                            Error::Matrix { code, message, .. } => (code.as_str(), message.clone()),
                            Error::Uiaa(_) => ("M_UNKNOWN", e.to_string()),
                        };
                        let user_failures =
                            failures.entry(target.clone()).or_insert_with(|| json!({}));
                        user_failures[key_id] = json!({ "errcode": code, "error": message });
                    }
                }
            }
        }
        if own_changes.is_empty() && !master_changed && !other_changed {
            self.db.write(batch)?;
        } else {
            let signing = if master_changed {
                Some(self.signing_key_update_content(user_id, &CrossSigningUpload::default())?)
            } else {
                None
            };
            self.commit_key_change(batch, user_id, &own_changes, signing)?;
        }
        Ok(failures)
    }

    /// A signature of the user on their own device (by their
    /// self-signing key) or on their own master key (by one of their
    /// devices).
    fn sign_own_key(
        &self,
        batch: &mut conduit_storage::Batch<'_>,
        user_id: &UserId,
        key_id: &str,
        object: &JsonValue,
    ) -> Result<Signed> {
        let me = user_id.as_str();
        if let Some(mut device_keys) = self.db.get(&tables::DEVICE_KEYS, (me, key_id))? {
            if signed_part(&device_keys) != signed_part(object) {
                return Err(invalid_signature(
                    "The signed object is not the device's keys.",
                ));
            }
            let self_signing = self
                .cross_signing_key(user_id, "self_signing")?
                .ok_or_else(|| invalid_signature("You have no self-signing key."))?;
            let public = key_of(&self_signing, user_id, "self_signing")
                .ok_or_else(|| invalid_signature("Your self-signing key is malformed."))?;
            let signature_id = format!("ed25519:{public}");
            if !signed_by(object, me, &signature_id, public) {
                return Err(invalid_signature(
                    "The signature does not verify with your self-signing key.",
                ));
            }
            let signature = object["signatures"][me][&signature_id].clone();
            merge_signatures(
                &mut device_keys,
                &json!({ "signatures": { me: { signature_id: signature } } }),
            );
            batch.put(&tables::DEVICE_KEYS, (me, key_id), &device_keys)?;
            return Ok(Signed::Device(DeviceUpdate::changed(key_id, device_keys)));
        }
        let mut master = self
            .cross_signing_key(user_id, "master")?
            .ok_or_else(|| Error::not_found(format!("No key {key_id} of yours is known.")))?;
        if key_of(&master, user_id, "master") != Some(key_id)
            || signed_part(&master) != signed_part(object)
        {
            return Err(Error::not_found(format!(
                "No key {key_id} of yours is known."
            )));
        }
        // Each device signature on it must be a device's own key.
        let mut added = Map::new();
        for (signature_id, signature) in object["signatures"][me].as_object().into_iter().flatten()
        {
            if master["signatures"][me].get(signature_id).is_some() {
                continue;
            }
            let device = signature_id.strip_prefix("ed25519:").unwrap_or("");
            let device_public = self
                .db
                .get(&tables::DEVICE_KEYS, (me, device))?
                .and_then(|keys| device_signing_key(&keys, device).map(str::to_owned));
            match device_public {
                Some(public) if signed_by(object, me, signature_id, &public) => {
                    added.insert(signature_id.clone(), signature.clone());
                }
                _ => {
                    return Err(invalid_signature(&format!(
                        "The signature {signature_id} on your master key does not verify."
                    )));
                }
            }
        }
        merge_signatures(&mut master, &json!({ "signatures": { me: added } }));
        batch.put(&tables::CROSS_SIGNING_KEYS, (me, "master"), &master)?;
        Ok(Signed::Master)
    }

    /// A signature of the user's user-signing key on another user's
    /// master key: kept apart, shown to the signer only.
    fn sign_other_master_key(
        &self,
        batch: &mut conduit_storage::Batch<'_>,
        user_id: &UserId,
        target: &str,
        key_id: &str,
        object: &JsonValue,
    ) -> Result<Signed> {
        let me = user_id.as_str();
        let target_id = <&UserId>::try_from(target)
            .map_err(|_| Error::invalid_param(format!("{target:?} is not a user id.")))?;
        let master = self
            .cross_signing_key(target_id, "master")?
            .ok_or_else(|| Error::not_found(format!("{target} has no master key known here.")))?;
        if key_of(&master, target_id, "master") != Some(key_id)
            || signed_part(&master) != signed_part(object)
        {
            return Err(invalid_signature(
                "The signed object is not the user's master key.",
            ));
        }
        let user_signing = self
            .cross_signing_key(user_id, "user_signing")?
            .ok_or_else(|| invalid_signature("You have no user-signing key."))?;
        let public = key_of(&user_signing, user_id, "user_signing")
            .ok_or_else(|| invalid_signature("Your user-signing key is malformed."))?;
        let signature_id = format!("ed25519:{public}");
        if !signed_by(object, me, &signature_id, public) {
            return Err(invalid_signature(
                "The signature does not verify with your user-signing key.",
            ));
        }
        let signature = object["signatures"][me][&signature_id].clone();
        batch.put(
            &tables::KEY_SIGNATURES,
            (target, key_id, me),
            &json!({ signature_id: signature }),
        )?;
        Ok(Signed::Other)
    }

    /// A user's cross-signing keys as `asker` sees them: the master key
    /// with the asker's own signatures on it, the user-signing key only
    /// for its owner.
    pub(crate) fn cross_signing_keys_for(
        &self,
        user_id: &UserId,
        asker: Option<&UserId>,
    ) -> Result<[(&'static str, Option<JsonValue>); 3]> {
        let mut master = self.cross_signing_key(user_id, "master")?;
        if let (Some(master), Some(asker)) = (&mut master, asker)
            && asker != user_id
            && let Some(key_id) = key_of(master, user_id, "master").map(str::to_owned)
            && let Some(signatures) = self.db.get(
                &tables::KEY_SIGNATURES,
                (user_id.as_str(), key_id.as_str(), asker.as_str()),
            )?
        {
            merge_signatures(
                master,
                &json!({ "signatures": { asker.as_str(): signatures } }),
            );
        }
        let user_signing = if asker == Some(user_id) {
            self.cross_signing_key(user_id, "user_signing")?
        } else {
            None
        };
        Ok([
            ("master_keys", master),
            (
                "self_signing_keys",
                self.cross_signing_key(user_id, "self_signing")?,
            ),
            ("user_signing_keys", user_signing),
        ])
    }
}

/// What a checked signature was on.
enum Signed {
    Device(DeviceUpdate),
    Master,
    Other,
}
