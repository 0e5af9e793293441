//! Which appservices an event goes to: those whose namespaces hold its room,
//! its sender, the user its membership is about, a local member of the room
//! or one of the room's local aliases (the Application Service API's
//! "interested" rule). Decided when the event is appended, so its queue rows
//! land in the event's own batch.

use std::{collections::HashMap, sync::Arc};

use ruma::UserId;

use super::Appservice;
use crate::{Result, Services, rooms::members::MemberSummary, rooms::pdu::Pdu};

impl Services {
    /// The appservices interested in `pdu`, appended to room `room` whose
    /// state before it is the snapshot `state_before`. No allocation and no
    /// lookup on a server without appservices.
    pub(crate) fn appservices_for(
        &self,
        room_id: &str,
        room: u64,
        state_before: Option<u64>,
        pdu: &Pdu,
    ) -> Result<Vec<Arc<Appservice>>> {
        let registry = self.appservices.registry();
        if registry.all().is_empty() {
            return Ok(Vec::new());
        }
        let sender = <&UserId>::try_from(pdu.sender.as_str()).ok();
        let target = (pdu.kind == "m.room.member")
            .then(|| pdu.state_key.as_deref())
            .flatten()
            .and_then(|key| <&UserId>::try_from(key).ok());
        let members = match state_before {
            Some(snapshot) => Some(self.member_summary(room, snapshot)?),
            None => None,
        };
        let mut aliases = None;
        let mut interested = Vec::new();
        // An appservice without a url only sends.
        for appservice in registry
            .all()
            .iter()
            .filter(|a| a.registration.url.is_some())
        {
            let wants = sender.is_some_and(|u| appservice.is_user(u))
                || target.is_some_and(|u| appservice.is_user(u))
                || self.interested_in_room(
                    appservice,
                    room_id,
                    members.as_deref(),
                    &mut aliases,
                )?;
            if wants {
                interested.push(appservice.clone());
            }
        }
        Ok(interested)
    }

    /// Whether the appservice is interested in everything of a room: its
    /// id, a local joined member (of `members`) or a local alias in its
    /// namespaces. `aliases` caches the room's aliases across appservices.
    pub(super) fn interested_in_room(
        &self,
        appservice: &Appservice,
        room_id: &str,
        members: Option<&MemberSummary>,
        aliases: &mut Option<Vec<String>>,
    ) -> Result<bool> {
        if appservice.is_room(room_id)
            || members.is_some_and(|m| m.local_joined.keys().any(|user| appservice.is_user(user)))
        {
            return Ok(true);
        }
        if !appservice.has_alias_namespaces() {
            return Ok(false);
        }
        let aliases = match aliases {
            Some(aliases) => aliases,
            None => aliases.insert(self.room_aliases(room_id)?),
        };
        Ok(aliases.iter().any(|alias| appservice.is_alias(alias)))
    }

    /// [`Self::interested_in_room`] for a room known by its id, as its
    /// state is now.
    pub(super) fn interested_in_room_now(
        &self,
        appservice: &Appservice,
        room_id: &str,
    ) -> Result<bool> {
        let Some(room) = self.rooms.room(room_id)? else {
            return Ok(false);
        };
        let members = match self.rooms.head(room.short)?.state {
            Some(snapshot) => Some(self.member_summary(room.short, snapshot)?),
            None => None,
        };
        self.interested_in_room(appservice, room_id, members.as_deref(), &mut None)
    }

    /// Whether the appservice is interested in what `user_id` does outside
    /// rooms (presence, device lists): a user of its namespaces, or a member
    /// of a room it is interested in. `rooms` caches the answers per room
    /// across users.
    pub(super) fn interested_in_user(
        &self,
        appservice: &Appservice,
        user_id: &UserId,
        rooms: &mut HashMap<String, bool>,
    ) -> Result<bool> {
        if appservice.is_user(user_id) {
            return Ok(true);
        }
        for room_id in self.rooms.joined_rooms(user_id.as_str())? {
            let interested = match rooms.get(room_id.as_str()) {
                Some(&known) => known,
                None => {
                    let known = self.interested_in_room_now(appservice, &room_id)?;
                    rooms.insert(room_id, known);
                    known
                }
            };
            if interested {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
