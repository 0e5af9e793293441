//! Who must learn that someone's keys changed. A change of a user's
//! devices or cross-signing keys takes a stream position (a row of
//! `key_changes`); a sync, or `/keys/changes`, reads the rows after its
//! token and keeps the users the asker shares a room with. Users who
//! joined or left a room with the asker are news too (`member_changes`):
//! new room-mates' devices must be learnt, departed ones may be forgotten.
//!
//! For a local user, the same position is the `stream_id` of the
//! `m.device_list_update` EDUs sent to every server sharing a room with
//! them, queued in the change's own batch. A remote user's devices are
//! kept here once fetched; their server's updates apply when they follow
//! the last one applied (`prev_id`), else the list is fetched again.

use std::collections::{BTreeSet, HashSet};

use conduit_storage::{Batch, KeyPrefix, U64};
use ruma::{OwnedServerName, ServerName, UserId};
use serde_json::{Value as JsonValue, json};

use crate::{Result, Services, tables};

/// One device's change, as the EDU tells other servers.
pub struct DeviceUpdate {
    pub device_id: String,
    /// The new identity keys; `None` with `deleted`.
    pub keys: Option<JsonValue>,
    pub deleted: bool,
}

impl DeviceUpdate {
    pub fn changed(device_id: &str, keys: JsonValue) -> Self {
        Self {
            device_id: device_id.to_owned(),
            keys: Some(keys),
            deleted: false,
        }
    }

    pub fn deleted(device_id: &str) -> Self {
        Self {
            device_id: device_id.to_owned(),
            keys: None,
            deleted: true,
        }
    }
}

/// One of a user's rooms, as sync has read it.
pub struct UserRoom {
    pub id: String,
    pub short: u64,
    pub joined: bool,
}

/// What a sync's `device_lists` says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeviceListNews {
    pub changed: BTreeSet<String>,
    pub left: BTreeSet<String>,
}

impl DeviceListNews {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.left.is_empty()
    }
}

impl Services {
    /// Writes `batch` with a key change of `user_id` at a new position:
    /// the change row and, for a local user, the EDUs for the servers that
    /// share a room with them (`signing_keys`: the `m.signing_key_update`
    /// content when cross-signing keys changed).
    pub(crate) fn commit_key_change(
        &self,
        batch: Batch<'_>,
        user_id: &UserId,
        devices: &[DeviceUpdate],
        signing_keys: Option<JsonValue>,
    ) -> Result<u64> {
        let user = user_id.as_str();
        let local = user_id.server_name() == self.config.server_name;
        let destinations = if local {
            self.servers_sharing_rooms_with(user_id)?
        } else {
            BTreeSet::new()
        };
        let position = self.stream.write(
            &self.db,
            batch,
            None,
            |batch, position| {
                // Read under the stream's lock: two changes of one user
                // cannot both take the same previous position.
                let previous = self.db.get(&tables::KEY_CHANGE_POSITIONS, user)?;
                if let Some(previous) = previous {
                    batch.delete(&tables::KEY_CHANGES, (previous, user))?;
                }
                batch.put(&tables::KEY_CHANGES, (position, user), &true)?;
                batch.put(&tables::KEY_CHANGE_POSITIONS, user, position)?;
                let mut edus = Vec::new();
                let mut prev_id: Vec<u64> = previous.into_iter().collect();
                for device in devices {
                    let mut content = json!({
                        "user_id": user,
                        "device_id": device.device_id,
                        "stream_id": position,
                        "prev_id": prev_id,
                        "deleted": device.deleted,
                    });
                    if let Some(keys) = &device.keys {
                        content["keys"] = keys.clone();
                    }
                    edus.push(json!({ "edu_type": "m.device_list_update", "content": content }));
                    prev_id = vec![position];
                }
                if let Some(content) = &signing_keys {
                    edus.push(json!({ "edu_type": "m.signing_key_update", "content": content }));
                }
                for destination in &destinations {
                    for (index, edu) in edus.iter().enumerate() {
                        batch.put(
                            &tables::FEDERATION_EDU_QUEUE,
                            (destination.as_str(), position, index as u64),
                            edu,
                        )?;
                    }
                }
                Ok(())
            },
            |position| self.stream.mark_keys(position),
        )?;
        for destination in &destinations {
            self.wake_sender(destination);
        }
        self.nudge_device_lists();
        Ok(position)
    }

    /// The other servers with a member in a room with `user_id`.
    pub(crate) fn servers_sharing_rooms_with(
        &self,
        user_id: &UserId,
    ) -> Result<BTreeSet<OwnedServerName>> {
        let mut servers = BTreeSet::new();
        for room_id in self.rooms.joined_rooms(user_id.as_str())? {
            if let Some(room) = self.rooms.room(&room_id)? {
                servers.extend(self.servers_in_room(&room)?.iter().cloned());
            }
        }
        servers.remove(&self.config.server_name);
        servers.retain(|server| self.config.federates_with(server));
        Ok(servers)
    }

    /// Whether `other` is joined to one of `rooms` (the asker's): a scan
    /// of the other's rooms, which for a remote user are only those this
    /// server is in.
    fn shares_room(&self, rooms: &HashSet<&str>, other: &str) -> Result<bool> {
        Ok(self
            .rooms
            .joined_rooms(other)?
            .iter()
            .any(|room| rooms.contains(room.as_str())))
    }

    /// The users whose devices `user_id` must look at again, and those it
    /// no longer shares a room with, between two positions.
    pub fn device_list_news(
        &self,
        user_id: &UserId,
        since: u64,
        until: u64,
    ) -> Result<DeviceListNews> {
        let mut rooms = Vec::new();
        for (room_id, membership) in self.rooms.user_rooms(user_id.as_str())? {
            if let Some(room) = self.rooms.room(&room_id)? {
                rooms.push(UserRoom {
                    id: room_id,
                    short: room.short,
                    joined: membership == "join",
                });
            }
        }
        self.device_list_news_in(user_id, &rooms, since, until)
    }

    /// [`Self::device_list_news`] for a caller that has read the user's
    /// rooms already (sync).
    pub(crate) fn device_list_news_in(
        &self,
        user_id: &UserId,
        rooms: &[UserRoom],
        since: u64,
        until: u64,
    ) -> Result<DeviceListNews> {
        let me = user_id.as_str();
        let mut news = DeviceListNews::default();
        let my_rooms: HashSet<&str> = rooms
            .iter()
            .filter(|r| r.joined)
            .map(|r| r.id.as_str())
            .collect();
        self.for_each_key_change(since, until, |user| {
            if user == me || self.shares_room(&my_rooms, &user)? {
                news.changed.insert(user);
            }
            Ok(())
        })?;
        // Joins and leaves in the rooms the user is or was in.
        let mut departed = BTreeSet::new();
        for room in rooms {
            if !self.stream.room_changed_since(room.short, since) {
                continue;
            }
            let room_id = &room.id;
            let prefix = KeyPrefix::new().push::<U64>(room.short);
            let from = [room.short.to_be_bytes(), since.to_be_bytes()].concat();
            for row in self
                .db
                .scan_from(&tables::MEMBER_CHANGES, &prefix, &from, true)?
            {
                let ((_, position, user), membership) = row?;
                if position >= until {
                    break;
                }
                // After leaving a room (or only invited to it) the user
                // learns nothing of who else comes and goes there.
                if !room.joined && user != me {
                    continue;
                }
                let joined = membership == "join";
                if user == me {
                    // Everyone in a room the user joined (or left) is news.
                    for member in self.joined_member_ids(room_id)? {
                        if member == me {
                            continue;
                        }
                        if joined {
                            news.changed.insert(member);
                        } else {
                            departed.insert(member);
                        }
                    }
                } else if joined {
                    news.changed.insert(user);
                } else {
                    departed.insert(user);
                }
            }
        }
        for user in departed {
            if !self.shares_room(&my_rooms, &user)? {
                news.changed.remove(&user);
                news.left.insert(user);
            }
        }
        Ok(news)
    }

    /// Calls `visit` with each user whose devices or keys changed in
    /// `[since, until)`, oldest change first (a user's latest only).
    pub(crate) fn for_each_key_change(
        &self,
        since: u64,
        until: u64,
        mut visit: impl FnMut(String) -> Result<()>,
    ) -> Result<()> {
        let start = since.to_be_bytes();
        for row in self
            .db
            .scan_from(&tables::KEY_CHANGES, &KeyPrefix::new(), &start, true)?
        {
            let ((position, user), _) = row?;
            if position >= until {
                break;
            }
            visit(user)?;
        }
        Ok(())
    }

    /// The EDU's `user_id`, if it is a user of `origin` in a room with this
    /// server: updates about anyone else would only fill the change log and
    /// wake every sync for nobody.
    fn room_mate_of<'a>(
        &self,
        origin: &ServerName,
        content: &'a JsonValue,
    ) -> Result<Option<&'a UserId>> {
        let user = self.remote_user(origin, content.get("user_id").and_then(JsonValue::as_str));
        match user {
            Some(user) if !self.rooms.joined_rooms(user.as_str())?.is_empty() => Ok(Some(user)),
            _ => Ok(None),
        }
    }

    /// Takes in `m.device_list_update` from `origin`.
    pub(crate) async fn receive_device_list_update(
        self: &std::sync::Arc<Self>,
        origin: &ServerName,
        content: &JsonValue,
    ) -> Result<()> {
        let Some(user_id) = self.room_mate_of(origin, content)? else {
            return Ok(());
        };
        let user_id = user_id.to_owned();
        let (Some(device_id), Some(stream_id)) = (
            content.get("device_id").and_then(JsonValue::as_str),
            content.get("stream_id").and_then(JsonValue::as_u64),
        ) else {
            return Ok(());
        };
        let known = self
            .db
            .get(&tables::REMOTE_DEVICE_LISTS, user_id.as_str())?;
        let Some(known) = known else {
            // Not kept here: local clients ask again, and the server answers.
            self.commit_key_change(self.db.batch(), &user_id, &[], None)?;
            return Ok(());
        };
        // Older than what is kept: already in it. The same id again is let
        // through: one change of several devices shares one id (ours do).
        if stream_id < known {
            return Ok(());
        }
        let follows = content
            .get("prev_id")
            .and_then(JsonValue::as_array)
            .is_some_and(|prev| {
                prev.iter()
                    .all(|id| id.as_u64().is_some_and(|id| id <= known))
            });
        if !follows {
            // One fetch per user at a time; updates meanwhile are covered
            // by the list it brings.
            if !crate::utils::locked(&self.device_list_resyncs).insert(user_id.to_string()) {
                return Ok(());
            }
            let services = self.clone();
            tokio::spawn(async move {
                if let Err(e) = services.resync_device_list(&user_id, true).await {
                    tracing::info!(%user_id, "cannot fetch the user's devices: {e}");
                }
                crate::utils::locked(&services.device_list_resyncs).remove(user_id.as_str());
            });
            return Ok(());
        }
        let mut batch = self.db.batch();
        let row = (user_id.as_str(), device_id);
        if content.get("deleted").and_then(JsonValue::as_bool) == Some(true) {
            batch.delete(&tables::DEVICE_KEYS, row)?;
        } else if let Some(keys) = content.get("keys")
            && keys.get("user_id").and_then(JsonValue::as_str) == Some(user_id.as_str())
            && keys.get("device_id").and_then(JsonValue::as_str) == Some(device_id)
        {
            batch.put(&tables::DEVICE_KEYS, row, keys)?;
        }
        batch.put(&tables::REMOTE_DEVICE_LISTS, user_id.as_str(), stream_id)?;
        self.commit_key_change(batch, &user_id, &[], None)?;
        Ok(())
    }

    /// Fetches a remote user's whole device list (`/user/devices`) and
    /// keeps it, if a local user shares a room with them; `announce`: it
    /// is news for local clients (not when it is first kept for a query).
    pub(crate) async fn resync_device_list(&self, user_id: &UserId, announce: bool) -> Result<()> {
        let path = format!(
            "/_matrix/federation/v1/user/devices/{}",
            crate::federation::incoming::outliers::urlencode(user_id.as_str())
        );
        let answer = self
            .federation_request(
                user_id.server_name(),
                http::Method::GET,
                &path,
                None,
                crate::federation::client::DEFAULT_RESPONSE_LIMIT,
            )
            .await
            .map_err(|e| crate::Error::internal(format!("device list of {user_id}: {e}")))?;
        self.store_device_list(user_id, &answer, announce)
    }

    /// Replaces what is kept of a remote user's devices by `answer` (a
    /// `/user/devices` response).
    pub(crate) fn store_device_list(
        &self,
        user_id: &UserId,
        answer: &JsonValue,
        announce: bool,
    ) -> Result<()> {
        if self.rooms.joined_rooms(user_id.as_str())?.is_empty() {
            return Ok(());
        }
        let user = user_id.as_str();
        let mut batch = self.db.batch();
        let prefix = KeyPrefix::new().push::<conduit_storage::Str>(user);
        for row in self.db.scan_prefix(&tables::DEVICE_KEYS, &prefix)? {
            let ((_, device_id), _) = row?;
            batch.delete(&tables::DEVICE_KEYS, (user, device_id.as_str()))?;
        }
        for device in answer
            .get("devices")
            .and_then(JsonValue::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(device_id), Some(keys)) = (
                device.get("device_id").and_then(JsonValue::as_str),
                device.get("keys"),
            ) && keys.get("user_id").and_then(JsonValue::as_str) == Some(user)
            {
                batch.put(&tables::DEVICE_KEYS, (user, device_id), keys)?;
            }
        }
        for (field, usage) in [
            ("master_key", "master"),
            ("self_signing_key", "self_signing"),
        ] {
            if let Some(key) = answer.get(field)
                && super::cross_signing::key_of(key, user_id, usage).is_some()
            {
                batch.put(&tables::CROSS_SIGNING_KEYS, (user, usage), key)?;
            }
        }
        let stream_id = answer
            .get("stream_id")
            .and_then(JsonValue::as_u64)
            .unwrap_or(0);
        batch.put(&tables::REMOTE_DEVICE_LISTS, user, stream_id)?;
        if announce {
            self.commit_key_change(batch, user_id, &[], None)?;
        } else {
            self.db.write(batch)?;
        }
        Ok(())
    }

    /// Takes in `m.signing_key_update` from `origin`: a remote user's new
    /// master or self-signing key.
    pub(crate) fn receive_signing_key_update(
        &self,
        origin: &ServerName,
        content: &JsonValue,
    ) -> Result<()> {
        let Some(user_id) = self.room_mate_of(origin, content)? else {
            return Ok(());
        };
        let user = user_id.as_str();
        let mut batch = self.db.batch();
        let kept = self.db.contains(&tables::REMOTE_DEVICE_LISTS, user)?;
        for (field, usage) in [
            ("master_key", "master"),
            ("self_signing_key", "self_signing"),
        ] {
            if kept
                && let Some(key) = content.get(field)
                && super::cross_signing::key_of(key, user_id, usage).is_some()
            {
                batch.put(&tables::CROSS_SIGNING_KEYS, (user, usage), key)?;
            }
        }
        self.commit_key_change(batch, user_id, &[], None)?;
        Ok(())
    }

    /// The local `stream_id` of a user's device list: the position of its
    /// latest change.
    pub(crate) fn device_list_stream_id(&self, user_id: &UserId) -> Result<u64> {
        Ok(self
            .db
            .get(&tables::KEY_CHANGE_POSITIONS, user_id.as_str())?
            .unwrap_or(0))
    }
}

/// Notes a member event that joined or left `user`, in the event's
/// batch (`previous`: their membership before it).
pub(crate) fn note_member_change(
    batch: &mut Batch<'_>,
    room: u64,
    position: u64,
    user: &str,
    previous: Option<&str>,
    membership: &str,
) -> Result<()> {
    let was_joined = previous == Some("join");
    let is_joined = membership == "join";
    if was_joined != is_joined {
        batch.put(
            &tables::MEMBER_CHANGES,
            (room, position, user),
            &membership.to_owned(),
        )?;
        if is_joined {
            // A remote user's devices may have changed while no room
            // was shared (no updates came): learn them again.
            batch.delete(&tables::REMOTE_DEVICE_LISTS, user)?;
        }
    }
    Ok(())
}
