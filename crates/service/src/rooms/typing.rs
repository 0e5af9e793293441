//! Typing notifications: in memory only (they mean nothing after a
//! restart). Each change takes a stream position so sync can tell which
//! rooms' typing lists changed since a token; a timer ends each
//! notification when its timeout passes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::UserId;
use tokio::time::Instant;

use crate::{Result, Services, utils};

/// The longest a client may keep a typing notification without renewing it.
pub const MAX_TYPING_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
pub struct Typing {
    rooms: Mutex<HashMap<u64, RoomTyping>>,
}

#[derive(Default)]
struct RoomTyping {
    /// Who is typing, until when.
    users: Vec<(String, Instant)>,
    /// The stream position of the last change.
    changed_at: u64,
}

impl Typing {
    /// Who is typing in a room now, and the position of the last change.
    pub fn in_room(&self, room: u64) -> (Vec<String>, u64) {
        let rooms = utils::locked(&self.rooms);
        let Some(typing) = rooms.get(&room) else {
            return (Vec::new(), 0);
        };
        let now = Instant::now();
        let users = typing
            .users
            .iter()
            .filter(|(_, until)| *until > now)
            .map(|(user, _)| user.clone())
            .collect();
        (users, typing.changed_at)
    }

    /// Applies a change; whether the list of typing users changed.
    fn apply(&self, room: u64, user: &str, until: Option<Instant>) -> bool {
        let mut rooms = utils::locked(&self.rooms);
        let typing = rooms.entry(room).or_default();
        let now = Instant::now();
        let was_typing = typing.users.iter().any(|(u, t)| u == user && *t > now);
        typing.users.retain(|(u, t)| u != user && *t > now);
        if let Some(until) = until {
            typing.users.push((user.to_owned(), until));
        }
        was_typing != until.is_some()
    }

    /// Drops notifications whose time has passed; whether any did.
    fn expire(&self, room: u64) -> bool {
        let mut rooms = utils::locked(&self.rooms);
        let Some(typing) = rooms.get_mut(&room) else {
            return false;
        };
        let now = Instant::now();
        let before = typing.users.len();
        typing.users.retain(|(_, until)| *until > now);
        // The entry stays (with its `changed_at`) even when empty: a sync
        // with an older token must still learn that typing stopped.
        typing.users.len() != before
    }

    fn mark_changed(&self, room: u64, position: u64) {
        let mut rooms = utils::locked(&self.rooms);
        let typing = rooms.entry(room).or_default();
        typing.changed_at = typing.changed_at.max(position);
    }
}

impl Services {
    /// `PUT /typing`: `timeout` `Some` starts (or renews) a notification,
    /// `None` stops it. Only joined members may type.
    pub fn set_typing(
        self: &Arc<Self>,
        room_id: &str,
        user_id: &UserId,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let room = self.rooms.require_joined(user_id.as_str(), room_id)?;
        let timeout = timeout.map(|t| t.min(MAX_TYPING_TIMEOUT));
        let until = timeout.map(|t| Instant::now() + t);
        if self.typing.apply(room.short, user_id.as_str(), until) {
            self.announce_typing(room_id, room.short)?;
            self.send_typing_edu(room_id, user_id, until.is_some())?;
        }
        if let Some(until) = until {
            let services = Arc::downgrade(self);
            let room_id = room_id.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep_until(until).await;
                if let Some(services) = services.upgrade()
                    && services.typing.expire(room.short)
                    && let Err(e) = services.announce_typing(&room_id, room.short)
                {
                    tracing::warn!("cannot announce the end of typing: {e}");
                }
            });
        }
        Ok(())
    }

    fn announce_typing(&self, room_id: &str, room: u64) -> Result<()> {
        self.stream.bump(&self.db, Some(room), |position| {
            self.typing.mark_changed(room, position);
        })?;
        self.queue_ephemeral(room_id, room, || {
            let (user_ids, _) = self.typing.in_room(room);
            Ok(serde_json::json!({ "type": "m.typing", "content": { "user_ids": user_ids } }))
        });
        Ok(())
    }
}
