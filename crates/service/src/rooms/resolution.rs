//! State resolution over stored events: the state-res core reads events
//! and state keys through [`StoredEvents`], and a room's forked states
//! become one.

use std::sync::Arc;

use conduit_state_res::{EventSource, RoomVersion, ShortEventId, StateMap, resolve};

use super::pdu::Pdu;
use crate::{Result, Services};

/// The stored events, as the state-resolution core reads them.
pub struct StoredEvents<'a>(pub &'a Services);

impl EventSource for StoredEvents<'_> {
    type Event = Pdu;

    fn event(&self, id: ShortEventId) -> Option<Pdu> {
        self.0.rooms.pdu(id, &self.0.short_ids).ok().flatten()
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
