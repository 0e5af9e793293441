//! Devices and the tokens that belong to them. A device has at most one live
//! access token (and refresh token); deleting the device revokes both.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use conduit_storage::{Batch, Database, KeyPrefix, Str};
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, tables, utils};

/// What the `devices` table holds for each device.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct DeviceRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The refresh token traded in last: it stays valid until the access
    /// token it was traded for is first used, so a client that lost the
    /// refresh response can ask again (the spec's rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_refresh_token: Option<String>,
    /// The OAuth 2.0 client the device signed in through, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_client: Option<String>,
}

/// What the token tables hold: whose token it is.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct TokenRecord {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    /// Access tokens issued with a refresh token expire; others do not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub is_guest: bool,
    /// On an access token issued by a refresh: the refresh token it
    /// revokes on its first use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revokes_on_use: Option<String>,
}

/// The identity behind an authenticated request.
#[derive(Clone, Debug)]
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub is_guest: bool,
    /// The appservice whose `as_token` made the request.
    pub appservice: Option<std::sync::Arc<crate::appservice::Appservice>>,
}

/// Tokens handed to a client at login, registration or refresh.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub device_id: OwnedDeviceId,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in_ms: Option<u64>,
}

/// How a new session is asked for.
pub struct SessionRequest<'a> {
    pub user_id: &'a UserId,
    pub device_id: Option<&'a DeviceId>,
    pub display_name: Option<&'a str>,
    pub with_refresh_token: bool,
    pub is_guest: bool,
    pub client_ip: Option<&'a str>,
    /// The OAuth 2.0 client signing in, for a grant of the OAuth API.
    pub oauth_client: Option<&'a str>,
}

/// A device's latest request (table `device_last_seen`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct LastSeen {
    pub ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// How often a device's "last seen" is written while it makes requests.
const SEEN_EVERY_MS: u64 = 5 * 60 * 1000;
/// Access tokens remembered for that; beyond this, entries older than the
/// interval go.
const SEEN_TOKENS_KEPT: usize = 100_000;

pub struct Devices {
    db: Arc<Database>,
    /// Lifetime of access tokens that come with a refresh token, in ms.
    refreshable_lifetime_ms: u64,
    /// Hash of an access token -> when its device's last-seen row was last
    /// written: a request costs a map lookup, one in five minutes a small write.
    seen_written: Mutex<HashMap<u64, u64>>,
}

impl Devices {
    pub(crate) fn new(db: Arc<Database>, refreshable_lifetime_ms: u64) -> Self {
        Self {
            db,
            refreshable_lifetime_ms,
            seen_written: Mutex::default(),
        }
    }

    /// Notes that a device made a request (time and address), at most once
    /// every five minutes. Kept in its own table, so it never races the
    /// device record's other changes.
    pub fn mark_seen(&self, session: &Session, access_token: &str, ip: Option<&str>) {
        let now = utils::now_ms();
        // Keyed by a hash: the map need not hold bearer tokens.
        let token_hash = {
            let mut hasher = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(access_token, &mut hasher);
            std::hash::Hasher::finish(&hasher)
        };
        {
            let mut written = utils::locked(&self.seen_written);
            if written
                .get(&token_hash)
                .is_some_and(|at| now.saturating_sub(*at) < SEEN_EVERY_MS)
            {
                return;
            }
            if written.len() >= SEEN_TOKENS_KEPT {
                written.retain(|_, at| now.saturating_sub(*at) < SEEN_EVERY_MS);
            }
            written.insert(token_hash, now);
        }
        let key = (session.user_id.as_str(), session.device_id.as_str());
        // A device deleted since the request authenticated gets no row back.
        if !self.db.contains(&tables::DEVICES, key).unwrap_or(false) {
            return;
        }
        let seen = LastSeen {
            ts: now,
            ip: ip.map(str::to_owned),
        };
        let mut batch = self.db.batch();
        let written = batch
            .put(&tables::DEVICE_LAST_SEEN, key, &seen)
            .and_then(|()| self.db.write(batch));
        if let Err(e) = written {
            tracing::warn!("cannot note a device's last activity: {e}");
        }
    }

    /// The record with its latest activity from `device_last_seen`.
    fn with_last_seen(
        &self,
        user_id: &str,
        device_id: &str,
        mut record: DeviceRecord,
    ) -> Result<DeviceRecord> {
        if let Some(LastSeen { ts, ip }) = self
            .db
            .get(&tables::DEVICE_LAST_SEEN, (user_id, device_id))?
            && record.last_seen_ts.is_none_or(|known| ts >= known)
        {
            record.last_seen_ts = Some(ts);
            record.last_seen_ip = ip;
        }
        Ok(record)
    }

    /// Finds who an access token belongs to: one point lookup.
    pub fn authenticate(&self, access_token: &str) -> Result<Session> {
        let record = self
            .db
            .get(&tables::ACCESS_TOKENS, access_token)?
            .ok_or_else(|| Error::unknown_token(false))?;
        if record.expires_at.is_some_and(|at| at <= utils::now_ms()) {
            return Err(Error::unknown_token(true));
        }
        if let Some(previous) = &record.revokes_on_use {
            self.first_use_after_refresh(access_token, &record, previous)?;
        }
        Ok(Session {
            user_id: record.user_id,
            device_id: record.device_id,
            is_guest: record.is_guest,
            appservice: None,
        })
    }

    pub fn get(&self, user_id: &UserId, device_id: &DeviceId) -> Result<Option<DeviceRecord>> {
        self.db
            .get(&tables::DEVICES, (user_id.as_str(), device_id.as_str()))?
            .map(|record| self.with_last_seen(user_id.as_str(), device_id.as_str(), record))
            .transpose()
    }

    pub fn list(&self, user_id: &UserId) -> Result<Vec<(OwnedDeviceId, DeviceRecord)>> {
        let prefix = KeyPrefix::new().push::<Str>(user_id.as_str());
        self.db
            .scan_prefix(&tables::DEVICES, &prefix)?
            .map(|row| {
                let ((_, device_id), record) = row?;
                let record = self.with_last_seen(user_id.as_str(), &device_id, record)?;
                Ok((device_id.into(), record))
            })
            .collect()
    }

    /// Logs a device in: creates it, or gives an existing device of the same
    /// user fresh tokens (its old ones stop working).
    pub fn create_session(&self, request: SessionRequest<'_>) -> Result<NewSession> {
        let mut batch = self.db.batch();
        let session = self.create_session_into(&mut batch, request)?;
        self.db.write(batch)?;
        Ok(session)
    }

    /// [`Self::create_session`] inside a caller's batch.
    pub fn create_session_into(
        &self,
        batch: &mut Batch<'_>,
        request: SessionRequest<'_>,
    ) -> Result<NewSession> {
        let device_id: OwnedDeviceId = match request.device_id {
            Some(id) => id.to_owned(),
            None => utils::random_device_id().into(),
        };
        let now = utils::now_ms();
        let mut record = self
            .get(request.user_id, &device_id)?
            .unwrap_or(DeviceRecord {
                created_at: now,
                ..Default::default()
            });
        if record.display_name.is_none() {
            record.display_name = request.display_name.map(str::to_owned);
        }
        record.last_seen_ts = Some(now);
        record.last_seen_ip = request.client_ip.map(str::to_owned);
        record.oauth_client = request.oauth_client.map(str::to_owned);

        let session = self.issue_tokens(
            batch,
            request.user_id,
            &device_id,
            &mut record,
            request.is_guest,
            request.with_refresh_token,
        )?;
        batch.put(
            &tables::DEVICES,
            (request.user_id.as_str(), device_id.as_str()),
            &record,
        )?;
        Ok(session)
    }

    /// The new access token of a refresh is used: the refresh token traded
    /// for it stops working now.
    fn first_use_after_refresh(
        &self,
        access_token: &str,
        token: &TokenRecord,
        previous: &str,
    ) -> Result<()> {
        let mut batch = self.db.batch();
        batch.delete(&tables::REFRESH_TOKENS, previous)?;
        let key = (token.user_id.as_str(), token.device_id.as_str());
        let device = self.db.get(&tables::DEVICES, key)?;
        // A logout, password change or deletion may have revoked this token
        // since it was read: never write it (or its device) back then.
        if device
            .as_ref()
            .is_none_or(|d| d.access_token.as_deref() != Some(access_token))
        {
            self.db.write(batch)?;
            return Err(Error::unknown_token(false));
        }
        if let Some(mut device) = device
            && device.previous_refresh_token.as_deref() == Some(previous)
        {
            device.previous_refresh_token = None;
            batch.put(
                &tables::DEVICES,
                (token.user_id.as_str(), token.device_id.as_str()),
                &device,
            )?;
        }
        let settled = TokenRecord {
            revokes_on_use: None,
            ..token.clone()
        };
        batch.put(&tables::ACCESS_TOKENS, access_token, &settled)?;
        self.db.write(batch)?;
        Ok(())
    }

    /// The user a refresh token belongs to.
    pub fn refresh_token_owner(&self, refresh_token: &str) -> Result<ruma::OwnedUserId> {
        self.db
            .get(&tables::REFRESH_TOKENS, refresh_token)?
            .map(|t| t.user_id)
            .ok_or_else(|| Error::unknown_token(false))
    }

    /// Trades a refresh token for a new access token and refresh token.
    ///
    /// The traded token stays valid until the new access token is first
    /// used (the client may not have received the answer); every other
    /// token of the device stops working at once.
    pub fn refresh(&self, refresh_token: &str) -> Result<NewSession> {
        let token = self
            .db
            .get(&tables::REFRESH_TOKENS, refresh_token)?
            .ok_or_else(|| Error::unknown_token(false))?;
        let mut record = self
            .get(&token.user_id, &token.device_id)?
            .ok_or_else(|| Error::unknown_token(false))?;
        let current = record.refresh_token.as_deref() == Some(refresh_token);
        let retried = record.previous_refresh_token.as_deref() == Some(refresh_token);
        if !current && !retried {
            return Err(Error::unknown_token(false));
        }
        record.last_seen_ts = Some(utils::now_ms());
        let mut batch = self.db.batch();
        // Keep the traded token out of the revocation below.
        if current {
            record.refresh_token = None;
        }
        if retried {
            record.previous_refresh_token = None;
        }
        let mut session = self.issue_tokens(
            &mut batch,
            &token.user_id,
            &token.device_id,
            &mut record,
            token.is_guest,
            true,
        )?;
        record.previous_refresh_token = Some(refresh_token.to_owned());
        let access = TokenRecord {
            user_id: token.user_id.clone(),
            device_id: token.device_id.clone(),
            expires_at: session.expires_in_ms.map(|ms| utils::now_ms() + ms),
            is_guest: token.is_guest,
            revokes_on_use: Some(refresh_token.to_owned()),
        };
        batch.put(&tables::ACCESS_TOKENS, &session.access_token, &access)?;
        session.device_id = token.device_id.clone();
        batch.put(
            &tables::DEVICES,
            (token.user_id.as_str(), token.device_id.as_str()),
            &record,
        )?;
        self.db.write(batch)?;
        Ok(session)
    }

    /// Replaces a device's tokens inside `batch`.
    fn issue_tokens(
        &self,
        batch: &mut Batch<'_>,
        user_id: &UserId,
        device_id: &DeviceId,
        record: &mut DeviceRecord,
        is_guest: bool,
        with_refresh_token: bool,
    ) -> Result<NewSession> {
        Self::revoke_tokens_into(batch, record)?;
        let expires_in_ms = with_refresh_token.then_some(self.refreshable_lifetime_ms);
        let token_record = TokenRecord {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            expires_at: expires_in_ms.map(|ms| utils::now_ms() + ms),
            is_guest,
            revokes_on_use: None,
        };
        let access_token = format!("cdt_{}", utils::random_string(32));
        batch.put(&tables::ACCESS_TOKENS, &access_token, &token_record)?;
        record.access_token = Some(access_token.clone());
        let refresh_token = if with_refresh_token {
            let token = format!("cdr_{}", utils::random_string(32));
            let refresh_record = TokenRecord {
                expires_at: None,
                ..token_record
            };
            batch.put(&tables::REFRESH_TOKENS, &token, &refresh_record)?;
            Some(token)
        } else {
            None
        };
        record.refresh_token = refresh_token.clone();
        Ok(NewSession {
            device_id: device_id.to_owned(),
            access_token,
            refresh_token,
            expires_in_ms,
        })
    }

    fn revoke_tokens_into(batch: &mut Batch<'_>, record: &mut DeviceRecord) -> Result<()> {
        if let Some(old) = record.access_token.take() {
            batch.delete(&tables::ACCESS_TOKENS, &old)?;
        }
        if let Some(old) = record.refresh_token.take() {
            batch.delete(&tables::REFRESH_TOKENS, &old)?;
        }
        if let Some(old) = record.previous_refresh_token.take() {
            batch.delete(&tables::REFRESH_TOKENS, &old)?;
        }
        Ok(())
    }

    /// Renames a device; `None` leaves the name as it is (the spec's rule),
    /// but an unknown device is still an error.
    pub fn set_display_name(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<String>,
    ) -> Result<()> {
        let mut record = self
            .get(user_id, device_id)?
            .ok_or_else(|| Error::not_found("Unknown device."))?;
        let Some(display_name) = display_name else {
            return Ok(());
        };
        record.display_name = Some(display_name);
        let mut batch = self.db.batch();
        batch.put(
            &tables::DEVICES,
            (user_id.as_str(), device_id.as_str()),
            &record,
        )?;
        self.db.write(batch)?;
        Ok(())
    }

    /// Deletes one device and revokes its tokens. Unknown devices are not an
    /// error: the result the caller wants already holds.
    #[cfg(test)]
    pub fn remove(&self, user_id: &UserId, device_id: &DeviceId) -> Result<()> {
        let mut batch = self.db.batch();
        self.remove_into(&mut batch, user_id, device_id)?;
        self.db.write(batch)?;
        Ok(())
    }

    pub fn remove_into(
        &self,
        batch: &mut Batch<'_>,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<()> {
        let key = (user_id.as_str(), device_id.as_str());
        if let Some(record) = self.db.get(&tables::DEVICES, key)? {
            self.remove_record_into(batch, user_id, device_id.as_str(), record)?;
        }
        // Also when the device is gone: a request racing its deletion may
        // have noted it after all.
        batch.delete(&tables::DEVICE_LAST_SEEN, key)?;
        Ok(())
    }

    fn remove_record_into(
        &self,
        batch: &mut Batch<'_>,
        user_id: &UserId,
        device_id: &str,
        mut record: DeviceRecord,
    ) -> Result<()> {
        Self::revoke_tokens_into(batch, &mut record)?;
        let key = (user_id.as_str(), device_id);
        batch.delete(&tables::DEVICES, key)?;
        batch.delete(&tables::DEVICE_LAST_SEEN, key)?;
        crate::e2ee::keys::remove_device_keys_into(&self.db, batch, user_id.as_str(), device_id)
    }

    /// Deletes every device of a user but `except`, inside `batch`; the
    /// ids of the devices it deletes.
    pub fn remove_all_into(
        &self,
        batch: &mut Batch<'_>,
        user_id: &UserId,
        except: Option<&DeviceId>,
    ) -> Result<Vec<String>> {
        // One scan: each row read here is the record whose tokens go.
        let prefix = KeyPrefix::new().push::<Str>(user_id.as_str());
        let mut removed = Vec::new();
        for row in self.db.scan_prefix(&tables::DEVICES, &prefix)? {
            let ((_, device_id), record) = row?;
            if Some(device_id.as_str()) != except.map(DeviceId::as_str) {
                self.remove_record_into(batch, user_id, &device_id, record)?;
                removed.push(device_id);
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use ruma::{device_id, user_id};

    use super::*;

    fn devices(lifetime_ms: u64) -> (tempfile::TempDir, Devices) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path(), tables::ALL, 1 << 20).unwrap());
        (dir, Devices::new(db, lifetime_ms))
    }

    fn login(devices: &Devices, device: Option<&DeviceId>, refresh: bool) -> NewSession {
        devices
            .create_session(SessionRequest {
                user_id: user_id!("@a:x"),
                device_id: device,
                display_name: Some("phone"),
                with_refresh_token: refresh,
                is_guest: false,
                client_ip: None,
                oauth_client: None,
            })
            .unwrap()
    }

    #[test]
    fn a_token_revoked_while_settling_is_not_written_back() {
        let (_dir, devices) = devices(60_000);
        let first = login(&devices, Some(device_id!("D")), true);
        let refreshed = devices
            .refresh(first.refresh_token.as_deref().unwrap())
            .unwrap();
        let record = devices
            .db
            .get(&tables::ACCESS_TOKENS, refreshed.access_token.as_str())
            .unwrap()
            .unwrap();
        let previous = record.revokes_on_use.clone().unwrap();
        // A logout lands between authenticate's read and its settling write.
        devices.remove(user_id!("@a:x"), device_id!("D")).unwrap();
        assert!(
            devices
                .first_use_after_refresh(&refreshed.access_token, &record, &previous)
                .is_err()
        );
        let token = refreshed.access_token.as_str();
        assert!(
            devices
                .db
                .get(&tables::ACCESS_TOKENS, token)
                .unwrap()
                .is_none()
        );
        assert!(
            devices
                .get(user_id!("@a:x"), device_id!("D"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn relogin_on_a_device_replaces_its_token_and_delete_revokes() {
        let (_dir, devices) = devices(60_000);
        let first = login(&devices, Some(device_id!("D")), false);
        let second = login(&devices, Some(device_id!("D")), false);
        assert!(devices.authenticate(&first.access_token).is_err());
        let session = devices.authenticate(&second.access_token).unwrap();
        assert_eq!(session.device_id, "D");
        assert_eq!(devices.list(user_id!("@a:x")).unwrap().len(), 1);
        devices.remove(user_id!("@a:x"), device_id!("D")).unwrap();
        assert!(devices.authenticate(&second.access_token).is_err());
        assert!(devices.list(user_id!("@a:x")).unwrap().is_empty());
    }

    #[test]
    fn requests_update_last_seen_in_their_own_table() {
        let (_dir, devices) = devices(60_000);
        let (alice, d) = (user_id!("@a:x"), device_id!("D"));
        let new = login(&devices, Some(d), false);
        let session = devices.authenticate(&new.access_token).unwrap();
        let key = (alice.as_str(), d.as_str());
        devices.mark_seen(&session, &new.access_token, Some("192.0.2.7"));
        let LastSeen { ts, ip } = devices
            .db
            .get(&tables::DEVICE_LAST_SEEN, key)
            .unwrap()
            .unwrap();
        assert_eq!(ip.as_deref(), Some("192.0.2.7"));
        let record = devices.get(alice, d).unwrap().unwrap();
        assert_eq!(record.last_seen_ip.as_deref(), Some("192.0.2.7"));
        assert_eq!(record.last_seen_ts, Some(ts));
        assert_eq!(devices.list(alice).unwrap()[0].1.last_seen_ts, Some(ts));

        // Within five minutes a request writes nothing.
        devices.mark_seen(&session, &new.access_token, Some("198.51.100.1"));
        let LastSeen { ip, .. } = devices
            .db
            .get(&tables::DEVICE_LAST_SEEN, key)
            .unwrap()
            .unwrap();
        assert_eq!(ip.as_deref(), Some("192.0.2.7"));

        devices.remove(alice, d).unwrap();
        assert!(
            devices
                .db
                .get(&tables::DEVICE_LAST_SEEN, key)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn refresh_rotates_and_expired_tokens_soft_logout() {
        let (_dir, devices) = devices(0);
        let session = login(&devices, None, true);
        let Err(Error::Matrix { soft_logout, .. }) = devices.authenticate(&session.access_token)
        else {
            panic!("a zero-lifetime token must be expired");
        };
        assert!(soft_logout);
        let refreshed = devices
            .refresh(session.refresh_token.as_deref().unwrap())
            .unwrap();
        assert_eq!(refreshed.device_id, session.device_id);
        // Trading the new refresh token spends the one before it.
        let again = devices
            .refresh(refreshed.refresh_token.as_deref().unwrap())
            .unwrap();
        assert!(
            devices
                .refresh(session.refresh_token.as_deref().unwrap())
                .is_err()
        );
        assert!(
            devices
                .refresh(again.refresh_token.as_deref().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn a_traded_refresh_token_works_until_the_new_access_token_is_used() {
        let (_dir, devices) = devices(60_000);
        let first = login(&devices, None, true);
        let old_refresh = first.refresh_token.clone().unwrap();
        // The answer to this refresh is "lost": the client asks again.
        let lost = devices.refresh(&old_refresh).unwrap();
        let retry = devices.refresh(&old_refresh).unwrap();
        // Only the latest pair lives; the lost one is gone.
        assert!(devices.authenticate(&lost.access_token).is_err());
        assert!(
            devices
                .refresh(lost.refresh_token.as_deref().unwrap())
                .is_err()
        );
        assert!(devices.authenticate(&first.access_token).is_err());
        // Using the new access token spends the old refresh token.
        devices.authenticate(&retry.access_token).unwrap();
        assert!(devices.refresh(&old_refresh).is_err());
        devices.authenticate(&retry.access_token).unwrap();
        let next = devices
            .refresh(retry.refresh_token.as_deref().unwrap())
            .unwrap();
        devices.authenticate(&next.access_token).unwrap();
        assert!(
            devices
                .refresh(retry.refresh_token.as_deref().unwrap())
                .is_err()
        );
    }

    #[test]
    fn remove_all_keeps_the_excepted_device() {
        let (_dir, devices) = devices(60_000);
        let keep = login(&devices, None, false);
        let drop = login(&devices, None, false);
        let mut batch = devices.db.batch();
        let removed = devices
            .remove_all_into(&mut batch, user_id!("@a:x"), Some(&keep.device_id))
            .unwrap();
        devices.db.write(batch).unwrap();
        assert_eq!(removed, vec![drop.device_id.to_string()]);
        assert!(devices.authenticate(&keep.access_token).is_ok());
        assert!(devices.authenticate(&drop.access_token).is_err());
    }
}
