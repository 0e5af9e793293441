//! Ephemeral events for appservices that ask for them
//! (`receive_ephemeral: true`, MSC2409's `de.sorunome.msc2409.push_ephemeral`):
//! the typing lists and read receipts of their rooms, the presence of their
//! users and of the members of their rooms. They are of the
//! moment, so they wait in memory only (at most [`KEPT`] per appservice,
//! the oldest dropped first) and go in transactions of their own once the
//! appservice's events are sent.

use std::sync::Arc;

use serde_json::Value as JsonValue;

use super::{Appservice, Appservices};
use crate::{Result, Services, utils};

/// Ephemeral events kept per appservice while it is not taking them.
const KEPT: usize = 1000;
/// Ephemeral events per transaction.
const BATCH: usize = 100;

impl Appservices {
    fn push_ephemeral(&self, id: &str, event: JsonValue) {
        let mut pending = utils::locked(&self.ephemeral);
        let queue = pending.entry(id.to_owned()).or_default();
        if queue.len() == KEPT {
            queue.pop_front();
        }
        queue.push_back(event);
    }

    /// The ephemeral events of the next transaction (at most [`BATCH`]).
    pub(super) fn take_ephemeral(&self, id: &str) -> Vec<JsonValue> {
        let mut pending = utils::locked(&self.ephemeral);
        let Some(queue) = pending.get_mut(id) else {
            return Vec::new();
        };
        let events: Vec<JsonValue> = queue.drain(..queue.len().min(BATCH)).collect();
        if queue.is_empty() {
            pending.remove(id);
        }
        events
    }

    pub(super) fn has_ephemeral(&self, id: &str) -> bool {
        utils::locked(&self.ephemeral).contains_key(id)
    }
}

impl Services {
    /// Hands an ephemeral event of a room to the appservices that asked
    /// for them and are interested in the room. `event` is built only when
    /// one is; a failure is logged, never the caller's.
    pub(crate) fn queue_ephemeral(
        &self,
        room_id: &str,
        room: u64,
        event: impl FnOnce() -> Result<JsonValue>,
    ) {
        let registry = self.appservices.registry();
        let wanting: Vec<&Arc<Appservice>> = registry
            .all()
            .iter()
            .filter(|a| a.registration.receive_ephemeral && a.registration.url.is_some())
            .collect();
        if wanting.is_empty() {
            return;
        }
        let result = (|| -> Result<()> {
            let state = self.rooms.head(room)?.state;
            let members = match state {
                Some(snapshot) => Some(self.member_summary(room, snapshot)?),
                None => None,
            };
            let mut aliases = None;
            let mut event = Some(event);
            let mut built: Option<JsonValue> = None;
            for appservice in wanting {
                if !self.interested_in_room(
                    appservice,
                    room_id,
                    members.as_deref(),
                    &mut aliases,
                )? {
                    continue;
                }
                if built.is_none() {
                    let make = event.take().expect("built once");
                    let mut value = make()?;
                    value["room_id"] = room_id.into();
                    built = Some(value);
                }
                self.appservices
                    .push_ephemeral(appservice.id(), built.clone().expect("built"));
                self.wake_appservice(appservice.id());
            }
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(
                room_id,
                "cannot hand an ephemeral event to appservices: {e}"
            );
        }
    }

    /// Hands presence changes to the appservices that asked for ephemeral
    /// events and are interested in the user (see `interested_in_user`).
    pub(crate) fn queue_presence_for_appservices(&self, users: &[ruma::OwnedUserId]) {
        let registry = self.appservices.registry();
        for appservice in registry
            .all()
            .iter()
            .filter(|a| a.registration.receive_ephemeral && a.registration.url.is_some())
        {
            let mut rooms = std::collections::HashMap::new();
            let mut woken = false;
            for user in users {
                match self.interested_in_user(appservice, user, &mut rooms) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(%user, "cannot hand presence to appservices: {e}");
                        continue;
                    }
                }
                let event = self.presence_of(user).to_event(user.as_str());
                self.appservices.push_ephemeral(appservice.id(), event);
                woken = true;
            }
            if woken {
                self.wake_appservice(appservice.id());
            }
        }
    }
}
