//! Rooms and their timelines as stored: a room record, the room's head
//! (current state, forward extremities, depth), the timeline index and
//! per-event metadata. Appending an event is one atomic batch under the
//! room's lock.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use conduit_state_res::{ShortEventId, StateMap};
use conduit_storage::Database;
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedMutexGuard;

use super::{pdu::Pdu, relations::RelationRows, short::ShortIds};
use crate::{Error, Result, stream::Stream, tables, utils};

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct RoomRecord {
    pub short: u64,
    pub version: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RoomHead {
    /// The current state's snapshot id; `None` before the create event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<u64>,
    /// Events with no successor yet: the next event's `prev_events`.
    pub extremities: Vec<ShortEventId>,
    pub depth: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct EventMeta {
    pub room: u64,
    /// Position in the server-wide order of events.
    pub count: u64,
    /// The state before the event; `None` for the create event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_before: Option<u64>,
}

/// An accepted event and what its append changes.
pub(crate) struct Append<'a> {
    pub room_id: &'a str,
    pub room: &'a RoomRecord,
    /// The state snapshot before the event (`None` for the create event).
    pub state_before: Option<u64>,
    /// The room's head once the event is in: current state, forward
    /// extremities, depth.
    pub next_head: RoomHead,
    pub pdu: &'a Pdu,
    /// The servers the event is queued for (none for events received over
    /// federation: they are not sent on).
    pub destinations: &'a [ruma::OwnedServerName],
    /// Whom the event notifies.
    pub notifications: &'a [super::push::Notified],
    /// The appservices it is queued for.
    pub appservices: &'a [std::sync::Arc<crate::appservice::Appservice>],
    /// The relation index rows, when the event relates to another.
    pub relation: Option<RelationRows>,
    /// The client transaction that sent it: remembered in the event's own
    /// batch, so a retry after a crash finds the event instead of sending again.
    pub transaction: Option<&'a super::send::Transaction<'a>>,
    /// Memberships the new current state holds besides the event's own
    /// that the member index does not have yet: (user, membership) from a
    /// state resolved across a fork, or the state a join came with.
    pub state_memberships: &'a [(String, String)],
}

/// Room locks kept before idle ones are dropped.
const ROOM_LOCKS_KEPT: usize = 1024;

pub struct Rooms {
    db: Arc<Database>,
    locks: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    /// Where each event's count (its position in the server-wide order)
    /// comes from.
    stream: Arc<Stream>,
    records: Mutex<HashMap<String, RoomRecord>>,
    /// Room short id -> where its latest events sit (sliding sync's sort),
    /// kept up to date by appends once a room is looked at.
    recency: Mutex<HashMap<u64, Recency>>,
}

/// Where a room's newest events are in the stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recency {
    /// The position of its latest event.
    pub latest: u64,
    /// The position of its latest event of a type that moves a room up a
    /// client's room list (`None` when not known yet).
    pub bump: Option<u64>,
}

/// The event types that bump a room (sliding sync's `bump_stamp`): what
/// people say, not state changes or reactions (the MSC's and Synapse's list).
pub const BUMP_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
];

impl Rooms {
    pub(crate) fn new(db: Arc<Database>, stream: Arc<Stream>) -> Self {
        Self {
            db,
            locks: Mutex::new(HashMap::new()),
            stream,
            records: Mutex::default(),
            recency: Mutex::default(),
        }
    }

    /// A room's record (cached: it never changes once made, and sync asks
    /// for every room of a user on every pass).
    pub fn room(&self, room_id: &str) -> Result<Option<RoomRecord>> {
        if let Some(record) = utils::locked(&self.records).get(room_id) {
            return Ok(Some(record.clone()));
        }
        let record: Option<RoomRecord> = self.db.get(&tables::ROOMS, room_id)?;
        if let Some(record) = &record {
            utils::locked(&self.records).insert(room_id.to_owned(), record.clone());
        }
        Ok(record)
    }

    pub fn head(&self, room: u64) -> Result<RoomHead> {
        Ok(self.db.get(&tables::ROOM_HEADS, room)?.unwrap_or_default())
    }

    /// The room's lock: every append to a room happens under it, so its
    /// head moves one event at a time. Different rooms proceed in parallel.
    pub async fn lock(&self, room: u64) -> OwnedMutexGuard<()> {
        let mutex = {
            let mut locks = utils::locked(&self.locks);
            // Locks nobody holds or waits for are dropped once the map grows,
            // so it stays as large as the rooms in use, not all rooms ever.
            if locks.len() >= ROOM_LOCKS_KEPT {
                locks.retain(|_, mutex| Arc::strong_count(mutex) > 1);
            }
            locks.entry(room).or_default().clone()
        };
        mutex.lock_owned().await
    }

    #[cfg(test)]
    pub(crate) fn locks_kept(&self) -> usize {
        utils::locked(&self.locks).len()
    }

    pub fn pdu(&self, short: ShortEventId, ids: &ShortIds) -> Result<Option<Pdu>> {
        self.db
            .get(&tables::PDUS, short)?
            .map(|json| Pdu::from_json(short, json, ids))
            .transpose()
    }

    pub fn pdu_by_id(&self, event_id: &str, ids: &ShortIds) -> Result<Option<Pdu>> {
        match ids.event_short(event_id)? {
            Some(short) => self.pdu(short, ids),
            None => Ok(None),
        }
    }

    /// Replaces a stored PDU's JSON (after a redaction).
    pub(crate) fn replace_pdu_json(
        &self,
        short: ShortEventId,
        json: &serde_json::Value,
    ) -> Result<()> {
        let mut batch = self.db.batch();
        batch.put(&tables::PDUS, short, json)?;
        self.db.write(batch)?;
        Ok(())
    }

    pub fn meta(&self, short: ShortEventId) -> Result<Option<EventMeta>> {
        Ok(self.db.get(&tables::EVENT_META, short)?)
    }

    /// Appends an accepted event: its JSON, its place in the timeline, its
    /// metadata, the room's new head, the member index and whom it
    /// notifies, in one batch.
    /// The new state snapshot (if any) is already stored: a snapshot nobody
    /// points to after a crash costs nothing.
    pub(crate) fn append(&self, entry: Append<'_>) -> Result<u64> {
        let Append {
            room_id,
            room,
            state_before,
            next_head,
            pdu,
            destinations,
            notifications,
            appservices,
            relation,
            transaction,
            state_memberships,
        } = entry;
        let search_words = super::search::index_rows(pdu);
        let mut batch = self.db.batch();
        batch.put(&tables::PDUS, pdu.short, &pdu.json)?;
        batch.put(&tables::ROOM_HEADS, room.short, &next_head)?;
        if let Some(txn) = transaction {
            batch.put(
                &tables::TRANSACTIONS,
                (txn.user_id.as_str(), txn.device_id, txn.txn_id),
                pdu.event_id.as_str(),
            )?;
        }
        // The member index follows the room's current state: the event's
        // own membership, and any the state took on otherwise.
        let mut member_changes = Vec::new();
        let own = (pdu.kind == "m.room.member")
            .then(|| {
                pdu.state_key
                    .as_deref()
                    .zip(pdu.content.get("membership").and_then(|m| m.as_str()))
            })
            .flatten();
        // The event's own membership wins over what the state held for the
        // same user (the state a join came with has the invite).
        let from_state = state_memberships
            .iter()
            .map(|(u, m)| (u.as_str(), m.as_str()))
            .filter(|(u, _)| own.is_none_or(|(me, _)| me != *u));
        for (user, membership) in from_state.chain(own) {
            let previous: Option<String> = self.db.get(&tables::USER_ROOMS, (user, room_id))?;
            batch.put(&tables::USER_ROOMS, (user, room_id), &membership.to_owned())?;
            member_changes.push((user, previous, membership));
        }
        let sender_read: Vec<u64> = {
            let prefix = conduit_storage::KeyPrefix::new()
                .push::<conduit_storage::Str>(&pdu.sender)
                .push::<conduit_storage::U64>(room.short);
            self.db
                .scan_prefix(&tables::NOTIFICATIONS, &prefix)?
                .map(|row| Ok(row?.0.2))
                .collect::<Result<_>>()?
        };
        let fill = |batch: &mut conduit_storage::Batch<'_>, count: u64| {
            batch.put(&tables::TIMELINE, (room.short, count), pdu.short)?;
            if let Some(relation) = relation {
                relation.write(batch, pdu, count)?;
            }
            super::search::write_index(batch, room.short, count, pdu, &search_words)?;
            for (user, previous, membership) in &member_changes {
                crate::e2ee::device_lists::note_member_change(
                    batch,
                    room.short,
                    count,
                    user,
                    previous.as_deref(),
                    membership,
                )?;
            }
            let meta = EventMeta {
                room: room.short,
                count,
                state_before,
            };
            batch.put(&tables::EVENT_META, pdu.short, &meta)?;
            for destination in destinations {
                batch.put(
                    &tables::FEDERATION_QUEUE,
                    (destination.as_str(), count),
                    pdu.short,
                )?;
            }
            for appservice in appservices {
                batch.put(
                    &tables::APPSERVICE_QUEUE,
                    (appservice.id(), count),
                    pdu.short,
                )?;
            }
            // Sending is reading: the sender's notifications in the room
            // end with their own event, as the spec asks.
            for count in &sender_read {
                batch.delete(
                    &tables::NOTIFICATIONS,
                    (pdu.sender.as_str(), room.short, *count),
                )?;
            }
            for notified in notifications {
                crate::push::history::write(batch, room_id, room.short, pdu, count, notified)?;
            }
            Ok(())
        };
        // A membership is news for its user even outside their rooms (an
        // invite to a new room, say).
        let members: Vec<&str> = member_changes.iter().map(|(user, _, _)| *user).collect();
        let count = self
            .stream
            .write(&self.db, batch, Some(room.short), fill, |count| {
                for user in &members {
                    self.stream.mark_user(user, count);
                }
                self.note_recency(
                    room.short,
                    Recency {
                        latest: count,
                        bump: BUMP_TYPES.contains(&pdu.kind.as_str()).then_some(count),
                    },
                );
            })?;
        Ok(count)
    }

    /// A room's recency as known in memory (`None`: not looked at yet).
    pub fn known_recency(&self, room: u64) -> Option<Recency> {
        utils::locked(&self.recency).get(&room).copied()
    }

    /// Records what an append or a look at the timeline found: the newest
    /// of each position wins, so a look racing an append loses nothing.
    pub fn note_recency(&self, room: u64, found: Recency) {
        let mut recency = utils::locked(&self.recency);
        let entry = recency.entry(room).or_insert(found);
        entry.latest = entry.latest.max(found.latest);
        entry.bump = entry.bump.max(found.bump);
    }

    /// Stores a new room's record.
    pub(crate) fn insert_room(&self, room_id: &str, record: &RoomRecord) -> Result<()> {
        let mut batch = self.db.batch();
        batch.put(&tables::ROOMS, room_id, record)?;
        self.db.write(batch)?;
        Ok(())
    }

    pub fn transaction(&self, txn: &super::send::Transaction<'_>) -> Result<Option<String>> {
        Ok(self.db.get(
            &tables::TRANSACTIONS,
            (txn.user_id.as_str(), txn.device_id, txn.txn_id),
        )?)
    }

    pub(crate) fn set_published(&self, room_id: &str, published: bool) -> Result<()> {
        let mut batch = self.db.batch();
        if published {
            batch.put(&tables::PUBLISHED_ROOMS, room_id, &true)?;
        } else {
            batch.delete(&tables::PUBLISHED_ROOMS, room_id)?;
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// Whether the user has any membership in the room (including a leave
    /// they have not forgotten).
    pub fn has_membership(&self, user_id: &str, room_id: &str) -> Result<bool> {
        Ok(self.db.contains(&tables::USER_ROOMS, (user_id, room_id))?)
    }

    /// The room, if the user is joined to it; `403` otherwise.
    pub fn require_joined(&self, user_id: &str, room_id: &str) -> Result<RoomRecord> {
        if self.membership(user_id, room_id)? != "join" {
            return Err(Error::forbidden("You are not joined to this room."));
        }
        self.room(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room."))
    }

    /// A user's membership in a room (`leave` when they never were in it).
    pub fn membership(&self, user_id: &str, room_id: &str) -> Result<String> {
        Ok(self
            .db
            .get(&tables::USER_ROOMS, (user_id, room_id))?
            .unwrap_or_else(|| "leave".to_owned()))
    }

    /// Up to `limit` timeline entries `(count, event)` of a room from the
    /// position `from`: forward takes counts `>= from`, backward counts `< from`.
    pub fn page(
        &self,
        room: u64,
        from: u64,
        forward: bool,
        limit: usize,
    ) -> Result<Vec<(u64, ShortEventId)>> {
        let prefix = conduit_storage::KeyPrefix::new().push::<conduit_storage::U64>(room);
        let start = [room.to_be_bytes(), from.to_be_bytes()].concat();
        self.db
            .scan_from(&tables::TIMELINE, &prefix, &start, forward)?
            .take(limit)
            .map(|row| {
                let ((_, count), event) = row?;
                Ok((count, event))
            })
            .collect()
    }

    /// Drops a room from a user's room list.
    pub(crate) fn forget(&self, user_id: &str, room_id: &str) -> Result<()> {
        let mut batch = self.db.batch();
        batch.delete(&tables::USER_ROOMS, (user_id, room_id))?;
        self.db.write(batch)?;
        Ok(())
    }

    /// Every room a user has a membership in, with that membership.
    pub fn user_rooms(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        let prefix = conduit_storage::KeyPrefix::new().push::<conduit_storage::Str>(user_id);
        self.db
            .scan_prefix(&tables::USER_ROOMS, &prefix)?
            .map(|row| {
                let ((_, room), membership) = row?;
                Ok((room, membership))
            })
            .collect()
    }

    /// The rooms a user has joined.
    pub fn joined_rooms(&self, user_id: &str) -> Result<Vec<String>> {
        let prefix = conduit_storage::KeyPrefix::new().push::<conduit_storage::Str>(user_id);
        self.db
            .scan_prefix(&tables::USER_ROOMS, &prefix)?
            .filter_map(|row| match row {
                Ok(((_, room), membership)) => (membership == "join").then_some(Ok(room)),
                Err(e) => Some(Err(e.into())),
            })
            .collect()
    }

    /// The full state of a snapshot, for callers that have the snapshot id.
    pub fn state_map(
        &self,
        snapshots: &super::state_snapshots::StateSnapshots,
        head: &RoomHead,
    ) -> Result<Arc<StateMap>> {
        match head.state {
            Some(id) => snapshots.load(id),
            None => Ok(Arc::new(StateMap::new())),
        }
    }
}
