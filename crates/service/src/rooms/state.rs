//! A room's state: now, before or after one of its events, or at a
//! stream position (a sync or pagination token). Every state lookup of the
//! service goes through here.

use std::sync::Arc;

use conduit_state_res::{ShortEventId, StateMap};

use super::{pdu::Pdu, timeline::RoomRecord};
use crate::{Error, Result, Services};

impl Services {
    /// A room's current state.
    pub fn current_state(&self, room: &RoomRecord) -> Result<Arc<StateMap>> {
        let head = self.rooms.head(room.short)?;
        self.rooms.state_map(&self.state_snapshots, &head)
    }

    /// A local room's current state, by id (`404` for rooms we do not have).
    pub fn current_state_of(&self, room_id: &str) -> Result<Arc<StateMap>> {
        let room = self
            .rooms
            .room(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room."))?;
        self.current_state(&room)
    }

    /// The state event holding `(kind, state_key)` in `state`.
    pub fn state_event(
        &self,
        state: &StateMap,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<Pdu>> {
        let Some(key) = self.short_ids.state_key_short(kind, state_key)? else {
            return Ok(None);
        };
        match state.get(&key) {
            Some(&short) => self.rooms.pdu(short, &self.short_ids),
            None => Ok(None),
        }
    }

    /// A string field of the content of the state event `(kind, "")`.
    pub fn state_text(&self, state: &StateMap, kind: &str, field: &str) -> Result<Option<String>> {
        Ok(self.state_event(state, kind, "")?.and_then(|e| {
            e.content
                .get(field)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        }))
    }

    /// The room state before an event.
    pub fn state_before(&self, event: ShortEventId) -> Result<Arc<StateMap>> {
        match self.rooms.meta(event)?.and_then(|m| m.state_before) {
            Some(snapshot) => self.state_snapshots.load(snapshot),
            None => Ok(Arc::new(StateMap::new())),
        }
    }

    /// The state of a room just before position `position` (after the last
    /// event below it). A room joined over federation has no timeline
    /// before its join: there it is the state before the first event (the
    /// state the join came with).
    pub fn state_at(&self, room: &RoomRecord, position: u64) -> Result<Arc<StateMap>> {
        if let Some(&(_, last)) = self.rooms.page(room.short, position, false, 1)?.first() {
            return self.state_after(last);
        }
        match self.rooms.page(room.short, position, true, 1)?.first() {
            Some(&(_, first)) => self.state_before(first),
            None => Ok(Arc::new(StateMap::new())),
        }
    }

    /// The room state after an event.
    pub fn state_after(&self, event: ShortEventId) -> Result<Arc<StateMap>> {
        let before = self.state_before(event)?;
        let Some(pdu) = self.rooms.pdu(event, &self.short_ids)? else {
            return Ok(before);
        };
        match pdu.state_key.as_deref() {
            Some(key) => {
                let mut after = (*before).clone();
                after.insert(
                    self.short_ids
                        .get_or_create_state_key_short(&pdu.kind, key)?,
                    event,
                );
                Ok(Arc::new(after))
            }
            None => Ok(before),
        }
    }
}
