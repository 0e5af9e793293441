//! Push notifications: the pushers a user's apps register (`/pushers`),
//! the notification history (`/notifications`) and the pushes to each
//! pusher's gateway in the Push Gateway API format.
//!
//! Whom an event notifies is decided where it is appended
//! (`rooms/push.rs`); the same batch writes a `notification_log` row per
//! notified user and a `push_queue` row per pusher of theirs, so an
//! acknowledged event is pushed even after `kill -9`. One worker per
//! pusher with work sends the rows in order and deletes each once the
//! gateway took it; the send path only wakes it.
//!
//! Pushers live in memory too (a server has few): the send path asks for a
//! user's pusher ids once per notified member.

pub mod history;
mod payload;
pub mod pushers;
mod sender;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock, Weak},
};

use conduit_storage::Database;
use ruma::UserId;
use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;

use crate::{Result, Services, counter::Counter, tables, utils};

/// A pusher as stored.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct PusherRecord {
    /// This server's id for it: the key of its queue rows.
    pub id: u64,
    pub user: String,
    /// The device that set it: deleting the device deletes the pusher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// When it was last set, in ms (`pushkey_ts` of the pushes).
    pub updated_ms: u64,
    /// The pusher as the client set it (kind, app_id, pushkey, names,
    /// lang, profile_tag, data), served back by `GET /pushers`.
    pub pusher: JsonValue,
}

impl PusherRecord {
    fn field(&self, name: &str) -> &str {
        self.pusher.get(name).and_then(|v| v.as_str()).unwrap_or("")
    }

    pub fn app_id(&self) -> &str {
        self.field("app_id")
    }

    pub fn pushkey(&self) -> &str {
        self.field("pushkey")
    }

    /// The gateway's URL.
    pub fn url(&self) -> &str {
        self.pusher
            .pointer("/data/url")
            .and_then(|v| v.as_str())
            .unwrap_or("")
    }

    /// Pushes carry only ids and counts.
    pub fn event_id_only(&self) -> bool {
        self.pusher.pointer("/data/format").and_then(|v| v.as_str()) == Some("event_id_only")
    }
}

/// What a pusher's worker keeps in memory.
#[derive(Default)]
struct Worker {
    running: bool,
    /// The badge the gateway was told last: a receipt that does not change
    /// it sends nothing.
    last_badge: Option<u64>,
}

#[derive(Default)]
struct Registry {
    by_id: HashMap<u64, Arc<PusherRecord>>,
    by_user: HashMap<String, Vec<u64>>,
    workers: HashMap<u64, Worker>,
}

impl Registry {
    fn insert(&mut self, record: PusherRecord) {
        let ids = self.by_user.entry(record.user.clone()).or_default();
        if !ids.contains(&record.id) {
            ids.push(record.id);
        }
        self.by_id.insert(record.id, Arc::new(record));
    }

    fn remove(&mut self, id: u64) {
        if let Some(record) = self.by_id.remove(&id)
            && let Some(ids) = self.by_user.get_mut(&record.user)
        {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_user.remove(&record.user);
            }
        }
    }
}

/// Every pusher, and the workers delivering to them.
pub struct Pushers {
    registry: Mutex<Registry>,
    ids: Counter,
    services: OnceLock<Weak<Services>>,
    client: OnceLock<reqwest::Client>,
}

impl Pushers {
    pub(crate) fn load(db: &Database) -> Result<Self> {
        let mut registry = Registry::default();
        for row in db.scan_prefix(&tables::PUSHERS, &conduit_storage::KeyPrefix::new())? {
            registry.insert(row?.1);
        }
        Ok(Self {
            registry: Mutex::new(registry),
            ids: Counter::load(db, "next_pusher_id")?,
            services: OnceLock::new(),
            client: OnceLock::new(),
        })
    }

    /// The ids of a user's pushers (most users have none: no allocation).
    pub fn ids_of(&self, user_id: &UserId) -> Vec<u64> {
        utils::locked(&self.registry)
            .by_user
            .get(user_id.as_str())
            .cloned()
            .unwrap_or_default()
    }

    fn get(&self, id: u64) -> Option<Arc<PusherRecord>> {
        utils::locked(&self.registry).by_id.get(&id).cloned()
    }

    /// A user's pushers.
    pub fn of_user(&self, user_id: &UserId) -> Vec<Arc<PusherRecord>> {
        let registry = utils::locked(&self.registry);
        registry
            .by_user
            .get(user_id.as_str())
            .into_iter()
            .flatten()
            .filter_map(|id| registry.by_id.get(id).cloned())
            .collect()
    }
}
