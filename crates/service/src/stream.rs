//! The server-wide stream position that sync tokens are made of. Events,
//! receipts, typing changes and account data all take their position from
//! one counter, so a sync token is one number and "what changed since" is a
//! range scan in every table that records positions.
//!
//! Positions are handed out in order, but the batches that use them may land
//! out of order: until a batch is written its position stays "in flight" and
//! readers stop below it.
//!
//! Sync asks, per room, whether anything happened there since a token; the
//! answer comes from memory, so an incremental sync over many quiet rooms
//! costs a hash lookup per room rather than a database read.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Mutex,
};

use conduit_storage::{Batch, Database};
use tokio::sync::watch;

use crate::{Result, counter::Counter};

pub struct Stream {
    counts: Counter,
    in_flight: Mutex<BTreeSet<u64>>,
    /// The position readers may trust, announced after every change.
    position: watch::Sender<u64>,
    /// Room short id -> the last position at which something happened there.
    room_changes: Mutex<HashMap<u64, u64>>,
    /// Rooms not seen since start may have changed at any position below
    /// this one.
    started_at: u64,
}

/// A position taken for a batch not written yet. Dropping it without
/// [`Stream::publish`] (the write failed) takes it out of flight all the same.
pub struct Reserved<'a> {
    stream: &'a Stream,
    pub count: u64,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.stream
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.count);
    }
}

impl Stream {
    pub(crate) fn new(db: &Database) -> Result<Self> {
        let counts = Counter::load(db, "next_event_count")?;
        let started_at = counts.peek();
        let (position, _) = watch::channel(started_at);
        Ok(Self {
            counts,
            in_flight: Mutex::default(),
            position,
            room_changes: Mutex::default(),
            started_at,
        })
    }

    /// Takes the next position for `batch` (which also records the counter).
    pub(crate) fn reserve(&self, batch: &mut Batch<'_>) -> Result<Reserved<'_>> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let count = self.counts.take(batch)?;
        in_flight.insert(count);
        Ok(Reserved {
            stream: self,
            count,
        })
    }

    /// Announces a written batch: marks `room` as changed at its position
    /// and wakes the waiting syncs.
    pub(crate) fn publish(&self, reserved: Reserved<'_>, room: Option<u64>) {
        if let Some(room) = room {
            let mut changes = self.room_changes.lock().unwrap_or_else(|p| p.into_inner());
            let last = changes.entry(room).or_default();
            *last = (*last).max(reserved.count);
        }
        drop(reserved);
        self.position.send_replace(self.position());
    }

    /// A change that lives in memory only (typing): takes a position,
    /// records the counter, lets `apply` store the change at that position,
    /// then publishes it (so no sync sees the position before the change).
    pub(crate) fn bump(
        &self,
        db: &Database,
        room: Option<u64>,
        apply: impl FnOnce(u64),
    ) -> Result<u64> {
        let mut batch = db.batch();
        let reserved = self.reserve(&mut batch)?;
        db.write(batch)?;
        let count = reserved.count;
        apply(count);
        self.publish(reserved, room);
        Ok(count)
    }

    /// Every change with a position below this is written: the sync token.
    pub fn position(&self) -> u64 {
        let in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        in_flight
            .first()
            .copied()
            .unwrap_or_else(|| self.counts.peek())
    }

    /// Wakes on every new position (sync's long-poll).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.position.subscribe()
    }

    /// Whether anything may have happened in `room` at or after `since`.
    pub fn room_changed_since(&self, room: u64, since: u64) -> bool {
        let changes = self.room_changes.lock().unwrap_or_else(|p| p.into_inner());
        let last = changes.get(&room).copied().unwrap_or(self.started_at);
        last >= since
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables;

    #[test]
    fn positions_stop_below_unwritten_batches_and_rooms_remember_changes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), tables::ALL, 1 << 20).unwrap();
        let stream = Stream::new(&db).unwrap();
        let start = stream.position();
        // Before any change, every room may have changed before the start.
        assert!(stream.room_changed_since(7, start - 1));
        assert!(!stream.room_changed_since(7, start + 1));

        let mut first = db.batch();
        let a = stream.reserve(&mut first).unwrap();
        let b_count = stream.bump(&db, Some(7), |_| {}).unwrap();
        assert_eq!(stream.position(), a.count, "stops below the open batch");
        db.write(first).unwrap();
        stream.publish(a, Some(8));
        assert_eq!(stream.position(), b_count + 1);
        assert!(stream.room_changed_since(7, b_count));
        assert!(!stream.room_changed_since(7, b_count + 1));
        assert!(stream.room_changed_since(8, start));

        // The counter is persistent: a new stream continues after it.
        drop(stream);
        let again = Stream::new(&db).unwrap();
        assert_eq!(again.position(), b_count + 1);
    }
}
