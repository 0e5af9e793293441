//! State resolution over stored events: the state-res core reads events
//! and state keys through [`StoredEvents`], and a room's forked states
//! become one.
//!
//! The auth difference of a merge in a big room walks the auth chains of
//! every state event (30,000 member events): each event's auth events are
//! kept in memory ([`AuthEventsCache`], filled by joins and by every walk),
//! so a walk reads integers, not stored events.

use std::sync::{Arc, Mutex};

use conduit_state_res::{EventSource, RoomVersion, ShortEventId, StateMap, resolve};

use super::pdu::Pdu;
use crate::{Result, Services, utils, utils::BoundedCache};

/// Events whose auth events are kept (about 60 bytes each).
const AUTH_EVENTS_KEPT: usize = 500_000;

/// The auth events of recently seen events, by short id.
pub struct AuthEventsCache(Mutex<BoundedCache<Arc<[u64]>>>);

impl Default for AuthEventsCache {
    fn default() -> Self {
        Self(Mutex::new(BoundedCache::new(AUTH_EVENTS_KEPT)))
    }
}

impl AuthEventsCache {
    pub(crate) fn get(&self, id: ShortEventId) -> Option<Arc<[u64]>> {
        utils::locked(&self.0).get(id)
    }

    pub(crate) fn insert(&self, id: ShortEventId, auth_events: &[u64]) {
        utils::locked(&self.0).insert(id, auth_events.into());
    }
}

/// The stored events, as the state-resolution core reads them.
pub struct StoredEvents<'a>(pub &'a Services);

impl EventSource for StoredEvents<'_> {
    type Event = Pdu;

    fn event(&self, id: ShortEventId) -> Option<Pdu> {
        self.0.rooms.pdu(id, &self.0.short_ids).ok().flatten()
    }

    fn with_auth_events(&self, id: ShortEventId, f: &mut dyn FnMut(&[ShortEventId])) {
        if let Some(found) = self.0.auth_events_cache.get(id) {
            return f(&found);
        }
        if let Some(event) = self.event(id) {
            self.0.auth_events_cache.insert(id, &event.auth_events);
            f(&event.auth_events);
        }
    }

    fn state_key_id(&self, event_type: &str, state_key: &str) -> Option<u64> {
        self.0
            .short_ids
            .state_key_short(event_type, state_key)
            .ok()
            .flatten()
    }
}

impl Services {
    /// One state from several: the same state when they agree, else the
    /// room version's state resolution.
    pub fn resolve_states(&self, version: &RoomVersion, states: &[Arc<StateMap>]) -> Arc<StateMap> {
        match states {
            [] => Arc::new(StateMap::new()),
            [only] => only.clone(),
            [first, rest @ ..] if rest.iter().all(|s| s == first) => first.clone(),
            _ => {
                let sets: Vec<StateMap> = states.iter().map(|s| (**s).clone()).collect();
                Arc::new(resolve(version, &sets, &StoredEvents(self)))
            }
        }
    }

    /// The state after an event that has a place in the room's DAG (one
    /// with metadata); `None` for outliers.
    pub fn state_after_placed(&self, event: ShortEventId) -> Result<Option<Arc<StateMap>>> {
        if self.rooms.meta(event)?.is_none() {
            return Ok(None);
        }
        self.state_after(event).map(Some)
    }
}
