//! History visibility: which events a user may read, per the spec's
//! `m.room.history_visibility` rules. The visibility in force is the one
//! of the state before each event; the user's membership is theirs at the
//! event (their own member event counts with its new membership).

use conduit_state_res::StateMap;
use ruma::UserId;

use super::{membership::membership_of, pdu::Pdu, timeline::RoomRecord};
use crate::{Error, Result, Services};

impl Services {
    /// The room, if the user may read some of its history: members, former
    /// members, invitees and knockers (their events are then filtered), or
    /// anyone in a world-readable room. `403` otherwise.
    pub fn require_may_read(&self, user_id: &UserId, room_id: &str) -> Result<RoomRecord> {
        let room = self
            .rooms
            .room(room_id)?
            .ok_or_else(|| Error::forbidden("You are not in this room."))?;
        if self.rooms.has_membership(user_id.as_str(), room_id)? {
            return Ok(room);
        }
        let state = self.current_state(&room)?;
        if self.history_visibility(&state)? == "world_readable" {
            return Ok(room);
        }
        Err(Error::forbidden("You are not in this room."))
    }

    /// Whether `user_id` may read `pdu`. `joined_now` is their current
    /// membership being `join` (the caller knows it once per request).
    pub fn may_see(&self, user_id: &UserId, joined_now: bool, pdu: &Pdu) -> Result<bool> {
        let state = self.state_before(pdu.short)?;
        let visibility = self.history_visibility(&state)?;
        if visibility == "world_readable" || (visibility == "shared" && joined_now) {
            return Ok(true);
        }
        let membership =
            if pdu.kind == "m.room.member" && pdu.state_key.as_deref() == Some(user_id.as_str()) {
                membership_of(pdu).to_owned()
            } else {
                self.state_event(&state, "m.room.member", user_id.as_str())?
                    .map(|member| membership_of(&member).to_owned())
                    .unwrap_or_else(|| "leave".to_owned())
            };
        Ok(membership == "join" || (visibility == "invited" && membership == "invite"))
    }

    /// Keeps the events the user may read.
    pub fn visible_events(
        &self,
        user_id: &UserId,
        room_id: &str,
        events: Vec<Pdu>,
    ) -> Result<Vec<Pdu>> {
        let joined_now = self.rooms.membership(user_id.as_str(), room_id)? == "join";
        let mut visible = Vec::with_capacity(events.len());
        for pdu in events {
            if self.may_see(user_id, joined_now, &pdu)? {
                visible.push(pdu);
            }
        }
        Ok(visible)
    }

    fn history_visibility(&self, state: &StateMap) -> Result<String> {
        // The spec's default when the event is missing or unreadable.
        Ok(self
            .state_event(state, "m.room.history_visibility", "")?
            .and_then(|pdu| {
                pdu.content
                    .get("history_visibility")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "shared".to_owned()))
    }
}
