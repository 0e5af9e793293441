//! Ephemeral events for appservices that ask for them
//! (`receive_ephemeral: true`, MSC2409's `de.sorunome.msc2409.push_ephemeral`):
//! the typing lists and read receipts of their rooms. They are of the
//! moment, so they wait in memory only (at most [`KEPT`] per appservice,
//! the oldest dropped first) and go in transactions of their own once the
//! appservice's events are sent.

use std::sync::{Arc, atomic::Ordering};

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

    /// The next ephemeral transaction: its id and events.
    pub(super) fn take_ephemeral(&self, id: &str) -> Option<(String, Vec<JsonValue>)> {
        let mut pending = utils::locked(&self.ephemeral);
        let queue = pending.get_mut(id)?;
        let events: Vec<JsonValue> = queue.drain(..queue.len().min(BATCH)).collect();
        if queue.is_empty() {
            pending.remove(id);
        }
        // Ids of their own, unique across restarts (seeded with the start
        // time in ms), that cannot be taken for an event transaction's.
        let n = self.ephemeral_txns.fetch_add(1, Ordering::Relaxed);
        (!events.is_empty()).then(|| (format!("e{n}"), events))
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
}
