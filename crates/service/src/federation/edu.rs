//! EDUs: typing notifications, read receipts and presence, sent to the
//! servers that share the room (or the user's rooms, for presence) and
//! taken in from them. Only what a server says of its own users counts.
//! Device-list, signing-key and to-device EDUs are end-to-end
//! encryption's (`crate::e2ee`); they are dispatched from here.

use std::{sync::Arc, time::Duration};

use ruma::{ServerName, UserId};
use serde_json::{Value as JsonValue, json};

use crate::{Result, Services};

/// How long a remote typing notification lasts without a renewal (Synapse
/// sends typing EDUs without a timeout and renews them).
const REMOTE_TYPING_TIMEOUT: Duration = Duration::from_secs(30);

impl Services {
    /// Takes in one EDU from `origin`; what it may not say is ignored.
    pub async fn receive_edu(self: &Arc<Self>, origin: &ServerName, edu: &JsonValue) {
        let kind = edu
            .get("edu_type")
            .and_then(JsonValue::as_str)
            .unwrap_or("");
        let content = edu.get("content").unwrap_or(&JsonValue::Null);
        let result = match kind {
            "m.typing" => self.receive_typing(origin, content),
            "m.receipt" => self.receive_receipts(origin, content).await,
            "m.presence" => self.receive_presence(origin, content),
            "m.direct_to_device" => self.receive_to_device(origin, content),
            "m.device_list_update" => self.receive_device_list_update(origin, content).await,
            "m.signing_key_update" => self.receive_signing_key_update(origin, content),
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::debug!(%origin, kind, "EDU ignored: {e}");
        }
    }

    pub(crate) fn remote_user<'a>(
        &self,
        origin: &ServerName,
        user: Option<&'a str>,
    ) -> Option<&'a UserId> {
        let user = <&UserId>::try_from(user?).ok()?;
        (user.server_name() == origin).then_some(user)
    }

    fn receive_typing(self: &Arc<Self>, origin: &ServerName, content: &JsonValue) -> Result<()> {
        let (Some(room_id), Some(user)) = (
            content.get("room_id").and_then(JsonValue::as_str),
            self.remote_user(origin, content.get("user_id").and_then(JsonValue::as_str)),
        ) else {
            return Ok(());
        };
        let room = self.room_context(room_id)?;
        self.check_server_acl(&room.record, origin)?;
        let typing = content.get("typing").and_then(JsonValue::as_bool) == Some(true);
        self.set_typing(room_id, user, typing.then_some(REMOTE_TYPING_TIMEOUT))
    }

    async fn receive_receipts(&self, origin: &ServerName, content: &JsonValue) -> Result<()> {
        let Some(rooms) = content.as_object() else {
            return Ok(());
        };
        for (room_id, kinds) in rooms {
            let Ok(room) = self.room_context(room_id) else {
                continue;
            };
            if self.check_server_acl(&room.record, origin).is_err() {
                continue;
            }
            let Some(users) = kinds.get("m.read").and_then(JsonValue::as_object) else {
                continue;
            };
            for (user, receipt) in users {
                let Some(user) = self.remote_user(origin, Some(user)) else {
                    continue;
                };
                let thread = receipt
                    .pointer("/data/thread_id")
                    .and_then(JsonValue::as_str);
                let events = receipt.get("event_ids").and_then(JsonValue::as_array);
                for event_id in events.into_iter().flatten().filter_map(JsonValue::as_str) {
                    if let Err(e) = self
                        .set_receipt(user, room_id, "m.read", event_id, thread)
                        .await
                    {
                        tracing::debug!(%user, event_id, "remote receipt ignored: {e}");
                    }
                }
            }
        }
        Ok(())
    }

    fn receive_presence(&self, origin: &ServerName, content: &JsonValue) -> Result<()> {
        let Some(updates) = content.get("push").and_then(JsonValue::as_array) else {
            return Ok(());
        };
        for update in updates {
            let Some(user) =
                self.remote_user(origin, update.get("user_id").and_then(JsonValue::as_str))
            else {
                continue;
            };
            let Some(state) = update.get("presence").and_then(JsonValue::as_str) else {
                continue;
            };
            // Only users in a room with us: anything else would only fill
            // memory with presence nobody here can see.
            if self.rooms.joined_rooms(user.as_str())?.is_empty() {
                continue;
            }
            let status = update
                .get("status_msg")
                .map(|s| s.as_str().map(str::to_owned));
            self.set_presence(user, state, status)?;
        }
        Ok(())
    }

    /// Sends a local user's typing change to the room's other servers.
    pub(crate) fn send_typing_edu(&self, room_id: &str, user: &UserId, typing: bool) -> Result<()> {
        if user.server_name() != self.config.server_name {
            return Ok(());
        }
        let edu = json!({
            "edu_type": "m.typing",
            "content": { "room_id": room_id, "user_id": user, "typing": typing },
        });
        self.send_edu_to_room(room_id, edu)
    }

    /// Sends a local user's public read receipt to the room's other servers.
    pub(crate) fn send_receipt_edu(
        &self,
        room_id: &str,
        user: &UserId,
        event_id: &str,
        thread: Option<&str>,
        ts: u64,
    ) -> Result<()> {
        if user.server_name() != self.config.server_name {
            return Ok(());
        }
        let mut data = json!({ "ts": ts });
        if let Some(thread) = thread {
            data["thread_id"] = thread.into();
        }
        let edu = json!({
            "edu_type": "m.receipt",
            "content": { room_id: { "m.read": { user.as_str(): {
                "event_ids": [event_id],
                "data": data,
            } } } },
        });
        self.send_edu_to_room(room_id, edu)
    }

    /// Sends local users' new presence to the servers sharing a room with
    /// them (what other servers say of their users is not passed on).
    pub(crate) fn send_presence_edus(&self, users: &[ruma::OwnedUserId]) -> Result<()> {
        for user in users {
            if user.server_name() != self.config.server_name {
                continue;
            }
            let mut servers = std::collections::BTreeSet::new();
            for room_id in self.rooms.joined_rooms(user.as_str())? {
                if let Some(room) = self.rooms.room(&room_id)? {
                    servers.extend(self.servers_in_room(&room)?.iter().cloned());
                }
            }
            if servers.is_empty() {
                continue;
            }
            let mut update = self.presence_of(user).to_event(user.as_str())["content"].take();
            update["user_id"] = user.as_str().into();
            let edu = json!({ "edu_type": "m.presence", "content": { "push": [update] } });
            for server in &servers {
                self.queue_edu(server, edu.clone());
            }
        }
        Ok(())
    }

    fn send_edu_to_room(&self, room_id: &str, edu: JsonValue) -> Result<()> {
        let Some(room) = self.rooms.room(room_id)? else {
            return Ok(());
        };
        for server in self.servers_in_room(&room)?.iter() {
            self.queue_edu(server, edu.clone());
        }
        Ok(())
    }
}
