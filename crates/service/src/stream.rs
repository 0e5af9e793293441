//! The server-wide stream position that sync tokens are made of. Events,
//! receipts, typing changes, presence and account data all take their
//! position from one counter, so a sync token is one number and "what
//! changed since" is a range scan in every table that records positions.
//!
//! Writes that take a position are written in position order (the counter
//! holds its lock across the write), so every position below the current
//! one is on disk: that is the token a sync hands out.
//!
//! Sync asks, per room, whether anything happened there since a token; the
//! answer comes from memory, so an incremental sync over many quiet rooms
//! costs a hash lookup per room rather than a database read.

use std::{collections::HashMap, sync::Mutex};

use conduit_storage::{Batch, Database};
use tokio::sync::watch;

use crate::{Result, counter::Counter, utils};

pub struct Stream {
    counts: Counter,
    /// The position readers may trust, announced after every change.
    position: watch::Sender<u64>,
    /// Room short id -> the last position at which something happened there.
    room_changes: Mutex<HashMap<u64, u64>>,
    /// User id -> the last position of a change of theirs outside their
    /// rooms' streams: their account data, their own membership anywhere.
    user_changes: Mutex<HashMap<String, u64>>,
    /// The last position at which anyone's presence changed.
    presence_changed: std::sync::atomic::AtomicU64,
    /// The last position at which anyone's devices or cross-signing keys
    /// changed (rare: every sync may look, a range scan finds who).
    keys_changed: std::sync::atomic::AtomicU64,
    /// Rooms not seen since start may have changed at any position below
    /// this one.
    started_at: u64,
}

/// Positions a new database keeps free below its first event: history
/// fetched from other servers (backfill) takes positions before a room's
/// earliest event, so it sorts before it and no sync sees it as new.
pub const BACKFILL_POSITIONS: u64 = 1 << 40;

impl Stream {
    pub(crate) fn new(db: &Database) -> Result<Self> {
        let counts = Counter::load_from(db, "next_event_count", BACKFILL_POSITIONS)?;
        let started_at = counts.peek();
        let (position, _) = watch::channel(started_at);
        Ok(Self {
            counts,
            position,
            room_changes: Mutex::default(),
            user_changes: Mutex::default(),
            presence_changed: std::sync::atomic::AtomicU64::new(started_at),
            keys_changed: std::sync::atomic::AtomicU64::new(started_at),
            started_at,
        })
    }

    /// Writes `batch` at the next position: `fill` adds the rows keyed by
    /// it, `written` records in-memory state at it (before any sync can see
    /// the position). Marks `room` as changed and wakes waiting syncs.
    pub(crate) fn write(
        &self,
        db: &Database,
        batch: Batch<'_>,
        room: Option<u64>,
        fill: impl FnOnce(&mut Batch<'_>, u64) -> Result<()>,
        written: impl FnOnce(u64),
    ) -> Result<u64> {
        let position = self.counts.write_next(db, batch, fill, |position| {
            if let Some(room) = room {
                let mut changes = utils::locked(&self.room_changes);
                changes.insert(room, position);
            }
            written(position);
        })?;
        self.position.send_replace(position + 1);
        Ok(position)
    }

    /// A change that lives in memory only (typing, presence): takes a
    /// position (recording the counter) and lets `apply` store the change
    /// at it.
    pub(crate) fn bump(
        &self,
        db: &Database,
        room: Option<u64>,
        apply: impl FnOnce(u64),
    ) -> Result<u64> {
        self.write(db, db.batch(), room, |_, _| Ok(()), apply)
    }

    /// Every change with a position below this is written: the sync token.
    pub fn position(&self) -> u64 {
        self.counts.peek()
    }

    /// Wakes on every new position (sync's long-poll).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.position.subscribe()
    }

    /// How many long-polls wait for a new position now.
    pub fn waiters(&self) -> usize {
        self.position.receiver_count()
    }

    /// Records a change of `user`'s at `position` (call it from a
    /// `written` closure, before the position is published).
    pub(crate) fn mark_user(&self, user: &str, position: u64) {
        let mut changes = utils::locked(&self.user_changes);
        let last = changes.entry(user.to_owned()).or_default();
        *last = (*last).max(position);
    }

    /// Records a presence change at `position` (from a `written` closure).
    pub(crate) fn mark_presence(&self, position: u64) {
        self.presence_changed
            .fetch_max(position, std::sync::atomic::Ordering::AcqRel);
    }

    /// Records a key change at `position` (from a `written` closure).
    pub(crate) fn mark_keys(&self, position: u64) {
        self.keys_changed
            .fetch_max(position, std::sync::atomic::Ordering::AcqRel);
    }

    /// Whether anything a sync of `user`, whose rooms are `rooms`, shows
    /// may have changed at or after `since`: memory only, no database. A
    /// woken long-poll asks this before looking for real.
    pub fn may_concern(&self, user: &str, rooms: &[u64], since: u64) -> bool {
        if self
            .presence_changed
            .load(std::sync::atomic::Ordering::Acquire)
            >= since
            || self.keys_changed.load(std::sync::atomic::Ordering::Acquire) >= since
        {
            return true;
        }
        let user_changed = utils::locked(&self.user_changes)
            .get(user)
            .copied()
            .unwrap_or(self.started_at);
        user_changed >= since
            || rooms
                .iter()
                .any(|&room| self.room_changed_since(room, since))
    }

    /// Whether anything may have happened in `room` at or after `since`.
    pub fn room_changed_since(&self, room: u64, since: u64) -> bool {
        let changes = utils::locked(&self.room_changes);
        let last = changes.get(&room).copied().unwrap_or(self.started_at);
        last >= since
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables;

    #[test]
    fn positions_grow_survive_reopen_and_rooms_remember_changes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), tables::ALL, 1 << 20).unwrap();
        let stream = Stream::new(&db).unwrap();
        let start = stream.position();
        // Before any change, every room may have changed before the start.
        assert!(stream.room_changed_since(7, start - 1));
        assert!(!stream.room_changed_since(7, start + 1));

        let mut seen = 0;
        let a = stream.bump(&db, Some(7), |p| seen = p).unwrap();
        assert_eq!(seen, a);
        assert_eq!(stream.position(), a + 1);
        // A batch that fails to build takes no position.
        let failed = stream.write(
            &db,
            db.batch(),
            Some(8),
            |_, _| Err(crate::Error::internal("no")),
            |_| {},
        );
        assert!(failed.is_err());
        assert!(!stream.room_changed_since(8, start + 1));
        let b = stream.bump(&db, Some(8), |_| {}).unwrap();
        assert_eq!(b, a + 1);
        assert!(stream.room_changed_since(7, a) && !stream.room_changed_since(7, a + 1));
        assert!(stream.room_changed_since(8, b));

        // What a woken sync asks: its rooms, its own changes, presence.
        let now = stream.position();
        assert!(!stream.may_concern("@a:x", &[7, 8], now));
        stream.bump(&db, Some(9), |_| {}).unwrap();
        assert!(!stream.may_concern("@a:x", &[7, 8], now), "another room");
        assert!(stream.may_concern("@a:x", &[9], now));
        let at = stream
            .bump(&db, None, |p| stream.mark_user("@a:x", p))
            .unwrap();
        assert!(stream.may_concern("@a:x", &[], at));
        assert!(!stream.may_concern("@b:x", &[], at));
        let at = stream.bump(&db, None, |p| stream.mark_presence(p)).unwrap();
        assert!(stream.may_concern("@b:x", &[], at));
        let b = stream.position() - 1;

        // The counter is persistent: a new stream continues after it.
        drop(stream);
        let again = Stream::new(&db).unwrap();
        assert_eq!(again.position(), b + 1);
    }
}
