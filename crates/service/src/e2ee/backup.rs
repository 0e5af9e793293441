//! Server-side key backup (`/room_keys`): versions of a user's backup,
//! each with its algorithm and public auth data, and the encrypted room
//! keys in it. Only the latest version takes new keys; of two backups of
//! one session the better key stays (the spec's rule: verified beats
//! unverified, then the lower first message index, then fewer forwards).

use std::cmp::Ordering;

use conduit_storage::{KeyPrefix, Str, U64};
use ruma::UserId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as JsonValue, json};

use crate::{Error, ErrorCode, Result, Services, tables};

/// One backup version (table `backup_versions`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct BackupVersion {
    pub algorithm: String,
    pub auth_data: JsonValue,
    /// Changes whenever the keys change (`etag`).
    pub etag: u64,
    /// How many keys it holds.
    pub count: u64,
    /// Deleted: kept as a tombstone so its number is never given again (a
    /// client still holding it must hear that it is gone).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// Which keys a read or delete is about.
#[derive(Clone, Copy)]
pub enum Scope<'a> {
    All,
    Room(&'a str),
    Session(&'a str, &'a str),
}

/// `{rooms: {room: {sessions: {session: key}}}}`, flattened.
pub type SessionKeys = Vec<(String, String, JsonValue)>;

fn not_found() -> Error {
    Error::not_found("No such backup version.")
}

fn parse_version(version: &str) -> Result<u64> {
    version.parse().map_err(|_| not_found())
}

/// Whether `new` should replace `old` (the spec's order).
pub fn better_key(new: &JsonValue, old: &JsonValue) -> bool {
    let verified = |k: &JsonValue| {
        k.get("is_verified")
            .and_then(JsonValue::as_bool)
            .unwrap_or(false)
    };
    let index = |k: &JsonValue| {
        k.get("first_message_index")
            .and_then(JsonValue::as_u64)
            .unwrap_or(u64::MAX)
    };
    let forwards = |k: &JsonValue| {
        k.get("forwarded_count")
            .and_then(JsonValue::as_u64)
            .unwrap_or(u64::MAX)
    };
    match verified(new).cmp(&verified(old)) {
        Ordering::Greater => return true,
        Ordering::Less => return false,
        Ordering::Equal => {}
    }
    match index(new).cmp(&index(old)) {
        Ordering::Less => true,
        Ordering::Greater => false,
        Ordering::Equal => forwards(new) < forwards(old),
    }
}

impl Services {
    fn backup_version(&self, user_id: &UserId, version: u64) -> Result<Option<BackupVersion>> {
        Ok(self
            .db
            .get(&tables::BACKUP_VERSIONS, (user_id.as_str(), version))?
            .filter(|v| !v.deleted))
    }

    fn put_backup_version(
        &self,
        user_id: &UserId,
        version: u64,
        record: &BackupVersion,
    ) -> Result<()> {
        let mut batch = self.db.batch();
        batch.put(
            &tables::BACKUP_VERSIONS,
            (user_id.as_str(), version),
            record,
        )?;
        self.db.write(batch)?;
        Ok(())
    }

    /// The highest version number ever made (deleted ones too) and its
    /// record.
    fn newest_backup_row(&self, user_id: &UserId) -> Result<Option<(u64, BackupVersion)>> {
        let prefix = KeyPrefix::new().push::<Str>(user_id.as_str());
        Ok(self
            .db
            .scan_from(
                &tables::BACKUP_VERSIONS,
                &prefix,
                &Self::backup_end(user_id),
                false,
            )?
            .next()
            .transpose()?
            .map(|((_, version), record)| (version, record)))
    }

    /// The latest version: the newest one not deleted.
    pub fn latest_backup(&self, user_id: &UserId) -> Result<Option<(u64, BackupVersion)>> {
        let prefix = KeyPrefix::new().push::<Str>(user_id.as_str());
        for row in self.db.scan_from(
            &tables::BACKUP_VERSIONS,
            &prefix,
            &Self::backup_end(user_id),
            false,
        )? {
            let ((_, version), record) = row?;
            if !record.deleted {
                return Ok(Some((version, record)));
            }
        }
        Ok(None)
    }

    /// A key after every version row of a user (for backward scans).
    fn backup_end(user_id: &UserId) -> Vec<u8> {
        let mut end = KeyPrefix::new()
            .push::<Str>(user_id.as_str())
            .as_bytes()
            .to_vec();
        end.extend_from_slice(&u64::MAX.to_be_bytes());
        end.push(0xff);
        end
    }

    /// `GET /room_keys/version[/{version}]`.
    pub fn backup_info(&self, user_id: &UserId, version: Option<&str>) -> Result<JsonValue> {
        let (version, record) = match version {
            Some(version) => {
                let number = parse_version(version)?;
                (
                    number,
                    self.backup_version(user_id, number)?
                        .ok_or_else(not_found)?,
                )
            }
            None => self.latest_backup(user_id)?.ok_or_else(not_found)?,
        };
        Ok(json!({
            "version": version.to_string(),
            "algorithm": record.algorithm,
            "auth_data": record.auth_data,
            "count": record.count,
            "etag": record.etag.to_string(),
        }))
    }

    /// `POST /room_keys/version`: a new latest version.
    pub async fn create_backup(
        &self,
        user_id: &UserId,
        algorithm: &str,
        auth_data: JsonValue,
    ) -> Result<String> {
        let _lock = self.user_locks.lock(user_id).await;
        let version = self.newest_backup_row(user_id)?.map_or(1, |(v, _)| v + 1);
        let record = BackupVersion {
            algorithm: algorithm.to_owned(),
            auth_data,
            etag: 0,
            count: 0,
            deleted: false,
        };
        self.put_backup_version(user_id, version, &record)?;
        Ok(version.to_string())
    }

    /// `PUT /room_keys/version/{version}`: new auth data, same algorithm.
    pub async fn update_backup(
        &self,
        user_id: &UserId,
        version: &str,
        algorithm: &str,
        auth_data: JsonValue,
    ) -> Result<()> {
        let _lock = self.user_locks.lock(user_id).await;
        let number = parse_version(version)?;
        let mut record = self
            .backup_version(user_id, number)?
            .ok_or_else(not_found)?;
        if record.algorithm != algorithm {
            return Err(Error::invalid_param(
                "A backup version keeps its algorithm; create a new version instead.",
            ));
        }
        record.auth_data = auth_data;
        self.put_backup_version(user_id, number, &record)
    }

    /// `DELETE /room_keys/version/{version}`: the version and its keys.
    pub async fn delete_backup(&self, user_id: &UserId, version: &str) -> Result<()> {
        let _lock = self.user_locks.lock(user_id).await;
        let number = parse_version(version)?;
        let Some(mut record) = self.backup_version(user_id, number)? else {
            return Err(not_found());
        };
        let mut batch = self.db.batch();
        record.deleted = true;
        record.count = 0;
        record.auth_data = JsonValue::Null;
        batch.put(
            &tables::BACKUP_VERSIONS,
            (user_id.as_str(), number),
            &record,
        )?;
        self.delete_keys_into(&mut batch, user_id, number, Scope::All)?;
        self.db.write(batch)?;
        Ok(())
    }

    /// `PUT /room_keys/keys...?version=`: stores each key unless the one
    /// kept is better; answers the new `etag` and `count`. Only the latest
    /// version takes keys (`403 M_WRONG_ROOM_KEYS_VERSION` otherwise).
    pub async fn put_backup_keys(
        &self,
        user_id: &UserId,
        version: &str,
        keys: SessionKeys,
    ) -> Result<(String, u64)> {
        let _lock = self.user_locks.lock(user_id).await;
        let number = parse_version(version)?;
        let latest = self.latest_backup(user_id)?;
        let mut record = match latest {
            Some((latest, record)) if latest == number => record,
            Some((latest, _)) => {
                return Err(Error::new(
                    ErrorCode::WrongRoomKeysVersion,
                    format!("The current backup version is {latest}."),
                ));
            }
            None => return Err(not_found()),
        };
        let user = user_id.as_str();
        let mut batch = self.db.batch();
        let mut changed = false;
        for (room, session, key) in &keys {
            let row = (user, number, (room.as_str(), session.as_str()));
            match self.db.get(&tables::BACKUP_KEYS, row)? {
                Some(old) if !better_key(key, &old) => continue,
                Some(_) => {}
                None => record.count += 1,
            }
            batch.put(&tables::BACKUP_KEYS, row, key)?;
            changed = true;
        }
        if changed {
            record.etag += 1;
            batch.put(&tables::BACKUP_VERSIONS, (user, number), &record)?;
        }
        self.db.write(batch)?;
        Ok((record.etag.to_string(), record.count))
    }

    /// `GET /room_keys/keys...?version=`.
    pub fn backup_keys(
        &self,
        user_id: &UserId,
        version: &str,
        scope: Scope<'_>,
    ) -> Result<SessionKeys> {
        let number = parse_version(version)?;
        if self.backup_version(user_id, number)?.is_none() {
            return Err(not_found());
        }
        let prefix = Self::scope_prefix(user_id, number, scope);
        self.db
            .scan_prefix(&tables::BACKUP_KEYS, &prefix)?
            .filter_map(|row| match row {
                Ok(((_, _, (room, session)), key)) => match scope {
                    // The prefix of a session id may match longer ones.
                    Scope::Session(_, wanted) if session != wanted => None,
                    _ => Some(Ok((room, session, key))),
                },
                Err(e) => Some(Err(e.into())),
            })
            .collect()
    }

    /// `DELETE /room_keys/keys...?version=`: answers `etag` and `count`.
    pub async fn delete_backup_keys(
        &self,
        user_id: &UserId,
        version: &str,
        scope: Scope<'_>,
    ) -> Result<(String, u64)> {
        let _lock = self.user_locks.lock(user_id).await;
        let number = parse_version(version)?;
        let mut record = self
            .backup_version(user_id, number)?
            .ok_or_else(not_found)?;
        let mut batch = self.db.batch();
        let deleted = self.delete_keys_into(&mut batch, user_id, number, scope)?;
        if deleted > 0 {
            record.count = record.count.saturating_sub(deleted);
            record.etag += 1;
            batch.put(
                &tables::BACKUP_VERSIONS,
                (user_id.as_str(), number),
                &record,
            )?;
        }
        self.db.write(batch)?;
        Ok((record.etag.to_string(), record.count))
    }

    fn scope_prefix(user_id: &UserId, version: u64, scope: Scope<'_>) -> KeyPrefix {
        let prefix = KeyPrefix::new()
            .push::<Str>(user_id.as_str())
            .push::<U64>(version);
        match scope {
            Scope::All => prefix,
            Scope::Room(room) | Scope::Session(room, _) => prefix.push::<Str>(room),
        }
    }

    fn delete_keys_into(
        &self,
        batch: &mut conduit_storage::Batch<'_>,
        user_id: &UserId,
        version: u64,
        scope: Scope<'_>,
    ) -> Result<u64> {
        let user = user_id.as_str();
        let mut deleted = 0;
        for row in self.db.scan_prefix(
            &tables::BACKUP_KEYS,
            &Self::scope_prefix(user_id, version, scope),
        )? {
            let ((_, _, (room, session)), _) = row?;
            if let Scope::Session(_, wanted) = scope
                && session != wanted
            {
                continue;
            }
            batch.delete(
                &tables::BACKUP_KEYS,
                (user, version, (room.as_str(), session.as_str())),
            )?;
            deleted += 1;
        }
        Ok(deleted)
    }
}

/// Keys as the `/room_keys/keys` bodies nest them.
pub fn nest_keys(keys: SessionKeys) -> JsonValue {
    let mut rooms: Map<String, JsonValue> = Map::new();
    for (room, session, key) in keys {
        let entry = rooms
            .entry(room)
            .or_insert_with(|| json!({ "sessions": {} }));
        entry["sessions"][session] = key;
    }
    json!({ "rooms": rooms })
}

#[cfg(test)]
mod tests {
    use super::better_key;
    use serde_json::json;

    #[test]
    fn the_better_key_wins() {
        let key = |verified: bool, index: u64, forwards: u64| json!({ "is_verified": verified, "first_message_index": index, "forwarded_count": forwards });
        // Verified beats unverified, whatever the index.
        assert!(better_key(&key(true, 9, 9), &key(false, 0, 0)));
        assert!(!better_key(&key(false, 0, 0), &key(true, 9, 9)));
        // Then the lower first message index.
        assert!(better_key(&key(false, 1, 5), &key(false, 2, 0)));
        assert!(!better_key(&key(false, 3, 0), &key(false, 2, 5)));
        // Then fewer forwards; an equal key does not replace.
        assert!(better_key(&key(true, 2, 0), &key(true, 2, 1)));
        assert!(!better_key(&key(true, 2, 1), &key(true, 2, 1)));
    }
}
