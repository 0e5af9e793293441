//! Which appservices an event goes to: those whose namespaces hold its room,
//! its sender, the user its membership is about, a local member of the room
//! or one of the room's local aliases (the Application Service API's
//! "interested" rule). Decided when the event is appended, so its queue rows
//! land in the event's own batch.

use std::sync::Arc;

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
}
