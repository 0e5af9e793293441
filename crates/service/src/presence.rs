//! Presence, kept in memory (after a restart everyone starts offline, as
//! after any absence). A user is `online` while they sync or set it;
//! without activity for [`IDLE_AFTER`] an `online` user shows as
//! `unavailable`. Only real state changes take a stream position, so a
//! busy syncing client does not wake everyone else's long-polls.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::{OwnedUserId, UserId};
use serde_json::{Value as JsonValue, json};

use crate::{Error, Result, Services, utils};

/// How long without activity before `online` shows as `unavailable`.
pub const IDLE_AFTER: Duration = Duration::from_secs(5 * 60);
/// How long without activity before anyone shows as `offline`: a client
/// that stopped syncing says nothing, so time has to.
pub const OFFLINE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often idle and offline transitions are looked for and announced.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Longest accepted `status_msg`, in bytes.
const MAX_STATUS_BYTES: usize = 1024;

#[derive(Default)]
pub struct Presence {
    users: Mutex<HashMap<OwnedUserId, UserPresence>>,
}

impl Presence {
    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedUserId, UserPresence>> {
        utils::locked(&self.users)
    }
}

#[derive(Clone)]
struct UserPresence {
    state: String,
    status_msg: Option<String>,
    last_active: Instant,
    /// The position at which what others see last changed.
    changed_at: u64,
    /// The presence others last learned (at `changed_at`).
    announced: String,
}

/// A user's presence as clients see it.
pub struct PresenceView {
    pub presence: String,
    pub status_msg: Option<String>,
    pub last_active_ago: u64,
    pub currently_active: bool,
}

impl UserPresence {
    fn view(&self, now: Instant) -> PresenceView {
        let idle = now.duration_since(self.last_active);
        let presence = if self.state != "offline" && idle >= OFFLINE_AFTER {
            "offline".to_owned()
        } else if self.state == "online" && idle >= IDLE_AFTER {
            "unavailable".to_owned()
        } else {
            self.state.clone()
        };
        PresenceView {
            currently_active: presence == "online",
            presence,
            status_msg: self.status_msg.clone(),
            last_active_ago: u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl PresenceView {
    pub fn to_event(&self, user_id: &str) -> JsonValue {
        let mut content = json!({
            "presence": self.presence,
            "last_active_ago": self.last_active_ago,
            "currently_active": self.currently_active,
        });
        if let Some(status) = &self.status_msg {
            content["status_msg"] = status.clone().into();
        }
        json!({ "type": "m.presence", "sender": user_id, "content": content })
    }
}

impl Services {
    /// `set_presence` on sync: marks the user active and raises their
    /// presence to `state` but never lowers it, so two devices syncing with
    /// different states (one `online`, one `unavailable`) do not flip it
    /// back and forth, waking everyone each time.
    pub fn presence_from_sync(&self, user_id: &UserId, state: &str) -> Result<()> {
        let rank = |s: &str| match s {
            "online" => 2,
            "unavailable" => 1,
            _ => 0,
        };
        let current = self.presence_of(user_id).presence;
        let state = if rank(state) >= rank(&current) {
            state
        } else {
            current.as_str()
        };
        self.set_presence(user_id, state, None)
    }

    /// `PUT /presence/{userId}/status` (`status_msg` `None` leaves the
    /// message as it is).
    pub fn set_presence(
        &self,
        user_id: &UserId,
        state: &str,
        status_msg: Option<Option<String>>,
    ) -> Result<()> {
        if !matches!(state, "online" | "offline" | "unavailable") {
            return Err(Error::invalid_param(format!("Unknown presence {state}.")));
        }
        if let Some(Some(status)) = &status_msg
            && status.len() > MAX_STATUS_BYTES
        {
            return Err(Error::invalid_param("status_msg is too long."));
        }
        let now = Instant::now();
        let changed = {
            let mut users = self.presence.users();
            let entry = users
                .entry(user_id.to_owned())
                .or_insert_with(|| UserPresence {
                    state: "offline".to_owned(),
                    status_msg: None,
                    last_active: now,
                    changed_at: 0,
                    announced: "offline".to_owned(),
                });
            let was = entry.view(now);
            if state != "offline" {
                entry.last_active = now;
            }
            entry.state = state.to_owned();
            if let Some(status) = status_msg {
                entry.status_msg = status;
            }
            let is = entry.view(now);
            entry.announced != is.presence || was.status_msg != is.status_msg
        };
        if changed {
            self.announce_presence(&[user_id.to_owned()])?;
        }
        Ok(())
    }

    /// Records what `users` show now as announced, at a new position.
    fn announce_presence(&self, users: &[OwnedUserId]) -> Result<()> {
        self.stream.bump(&self.db, None, |position| {
            let now = Instant::now();
            let mut all = self.presence.users();
            for user in users {
                if let Some(entry) = all.get_mut(user) {
                    entry.announced = entry.view(now).presence;
                    entry.changed_at = position;
                }
            }
            self.stream.mark_presence(position);
        })?;
        self.queue_presence_for_appservices(users);
        self.send_presence_edus(users)
    }

    /// Announces the transitions time made (online -> unavailable ->
    /// offline) since the last look.
    pub fn sweep_presence(&self) -> Result<()> {
        let now = Instant::now();
        let changed: Vec<OwnedUserId> = {
            let users = self.presence.users();
            users
                .iter()
                .filter(|(_, p)| p.view(now).presence != p.announced)
                .map(|(user, _)| user.clone())
                .collect()
        };
        if changed.is_empty() {
            return Ok(());
        }
        self.announce_presence(&changed)
    }

    /// Runs [`Self::sweep_presence`] every 30 s while the server lives.
    pub fn start_presence_sweeper(self: &std::sync::Arc<Self>) {
        self.every(SWEEP_EVERY, "presence sweep", Self::sweep_presence);
    }

    /// A user's presence (`offline` when never seen).
    pub fn presence_of(&self, user_id: &UserId) -> PresenceView {
        let users = self.presence.users();
        match users.get(user_id) {
            Some(presence) => presence.view(Instant::now()),
            None => PresenceView {
                presence: "offline".to_owned(),
                status_msg: None,
                last_active_ago: 0,
                currently_active: false,
            },
        }
    }

    /// Whether two users share a joined room (presence is visible then).
    pub fn share_a_room(&self, a: &UserId, b: &UserId) -> Result<bool> {
        let mine = self.rooms.joined_rooms(a.as_str())?;
        self.shares_with(a, &mine, b)
    }

    /// Whether `other` is `user_id` (whose joined rooms are `mine`) or is
    /// joined to one of those rooms.
    fn shares_with(&self, user_id: &UserId, mine: &[String], other: &UserId) -> Result<bool> {
        if user_id == other {
            return Ok(true);
        }
        Ok(self
            .rooms
            .joined_rooms(other.as_str())?
            .iter()
            .any(|room| mine.contains(room)))
    }

    /// Presence events for sync: users sharing a room with `user_id` whose
    /// presence changed at positions `since..until` (all on a first sync).
    pub(crate) fn presence_events(
        &self,
        user_id: &UserId,
        since: Option<u64>,
        until: u64,
    ) -> Result<Vec<JsonValue>> {
        let now = Instant::now();
        let changed: Vec<(OwnedUserId, PresenceView)> = {
            let users = self.presence.users();
            users
                .iter()
                .filter(|(_, p)| p.changed_at < until && since.is_none_or(|s| p.changed_at >= s))
                .map(|(user, p)| (user.clone(), p.view(now)))
                .collect()
        };
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        let mine = self.rooms.joined_rooms(user_id.as_str())?;
        let mut events = Vec::new();
        for (other, view) in changed {
            if self.shares_with(user_id, &mine, &other)? {
                events.push(view.to_event(other.as_str()));
            }
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use ruma::user_id;

    use super::*;
    use crate::Config;

    #[test]
    fn time_turns_online_into_unavailable_then_offline_and_the_sweep_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::load(None).unwrap().config;
        config.database_path = dir.path().to_owned();
        let services = crate::Services::open(config).unwrap();
        let alice = user_id!("@alice:localhost");
        services.set_presence(alice, "online", None).unwrap();
        let announced_at = services.stream.position();
        assert_eq!(services.presence_of(alice).presence, "online");

        let age = |d: Duration| {
            let mut users = services.presence.users.lock().unwrap();
            let entry = users.get_mut(alice).unwrap();
            entry.last_active = Instant::now().checked_sub(d).expect("uptime");
        };
        if Instant::now().checked_sub(OFFLINE_AFTER * 2).is_none() {
            return; // a machine up for less than an hour cannot fake idle time
        }
        age(IDLE_AFTER + Duration::from_secs(1));
        assert_eq!(services.presence_of(alice).presence, "unavailable");
        services.sweep_presence().unwrap();
        assert!(services.stream.position() > announced_at, "announced");
        let after_idle = services.stream.position();
        services.sweep_presence().unwrap();
        assert_eq!(services.stream.position(), after_idle, "nothing new");

        age(OFFLINE_AFTER + Duration::from_secs(1));
        assert_eq!(services.presence_of(alice).presence, "offline");
        services.sweep_presence().unwrap();
        assert!(services.stream.position() > after_idle);
    }
}
