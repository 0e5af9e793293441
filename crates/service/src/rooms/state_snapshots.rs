//! Room states stored as layered diffs: a snapshot is `(parent, added,
//! removed)` against its parent, and the chain is cut short (a full copy is
//! stored) when it grows deep or the diff grows large. Loading a state walks
//! the chain once and keeps the result in a bounded cache.

use std::sync::{Arc, Mutex};

use conduit_state_res::StateMap;
use conduit_storage::Database;
use serde::{Deserialize, Serialize};

use super::short::ShortIds;
use crate::{Error, Result, tables, utils, utils::BoundedCache};

/// Longest chain of diffs before a full copy is stored.
const MAX_DEPTH: u32 = 8;

/// A snapshot as stored.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct StoredSnapshot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u64>,
    /// Diffs since the last full copy; 0 for a full copy.
    #[serde(default)]
    pub depth: u32,
    /// (state key, event) pairs new or changed against the parent.
    pub added: Vec<(u64, u64)>,
    /// State keys the parent has and this state has not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<u64>,
}

pub struct StateSnapshots {
    db: Arc<Database>,
    cache: Mutex<BoundedCache<Arc<StateMap>>>,
}

impl StateSnapshots {
    pub(crate) fn new(db: Arc<Database>, cache_entries: usize) -> Self {
        Self {
            db,
            cache: Mutex::new(BoundedCache::new(cache_entries)),
        }
    }

    fn stored(&self, id: u64) -> Result<StoredSnapshot> {
        self.db
            .get(&tables::STATE_SNAPSHOTS, id)?
            .ok_or_else(|| Error::internal(format!("unknown state snapshot {id}")))
    }

    /// The full state of a snapshot.
    pub fn load(&self, id: u64) -> Result<Arc<StateMap>> {
        if let Some(state) = utils::locked(&self.cache).get(id) {
            return Ok(state);
        }
        let stored = self.stored(id)?;
        let mut state = match stored.parent {
            Some(parent) => (*self.load(parent)?).clone(),
            None => StateMap::new(),
        };
        for key in &stored.removed {
            state.remove(key);
        }
        state.extend(stored.added.iter().copied());
        let state = Arc::new(state);
        utils::locked(&self.cache).insert(id, state.clone());
        Ok(state)
    }

    /// Stores `state` as a diff against `parent` (or whole) and returns its id.
    pub fn save(&self, ids: &ShortIds, state: &StateMap, parent: Option<u64>) -> Result<u64> {
        let mut snapshot = StoredSnapshot::default();
        if let Some(parent) = parent {
            let depth = self.stored(parent)?.depth + 1;
            let before = self.load(parent)?;
            let added: Vec<(u64, u64)> = state
                .iter()
                .filter(|(key, event)| before.get(key) != Some(event))
                .map(|(k, v)| (*k, *v))
                .collect();
            let removed: Vec<u64> = before
                .keys()
                .filter(|k| !state.contains_key(k))
                .copied()
                .collect();
            let small = (added.len() + removed.len()) * 2 <= state.len().max(1);
            if depth <= MAX_DEPTH && small {
                snapshot = StoredSnapshot {
                    parent: Some(parent),
                    depth,
                    added,
                    removed,
                };
            }
        }
        if snapshot.parent.is_none() {
            snapshot.added = state.iter().map(|(k, v)| (*k, *v)).collect();
        }
        let id = ids.next_id()?;
        let mut batch = self.db.batch();
        batch.put(&tables::STATE_SNAPSHOTS, id, &snapshot)?;
        self.db.write(batch)?;
        utils::locked(&self.cache).insert(id, Arc::new(state.clone()));
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(cache: usize) -> (tempfile::TempDir, Arc<Database>, ShortIds, StateSnapshots) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path(), tables::ALL, 1 << 20).unwrap());
        let ids = ShortIds::new(db.clone()).unwrap();
        let snapshots = StateSnapshots::new(db.clone(), cache);
        (dir, db, ids, snapshots)
    }

    #[test]
    fn diffs_load_back_exactly_with_changes_and_removals() {
        // A cache of one entry forces loads through the stored chain.
        let (_dir, db, ids, snapshots) = setup(1);
        let mut state: StateMap = (0..40).map(|k| (k, 1000 + k)).collect();
        let mut id = snapshots.save(&ids, &state, None).unwrap();
        let mut history = vec![(id, state.clone())];
        for step in 0..20u64 {
            state.insert(step % 7, 5000 + step); // change
            state.insert(100 + step, 6000 + step); // add
            state.remove(&(20 + step)); // remove
            id = snapshots.save(&ids, &state, Some(id)).unwrap();
            history.push((id, state.clone()));
        }
        let fresh = StateSnapshots::new(db, 1);
        for (id, expected) in &history {
            assert_eq!(&*fresh.load(*id).unwrap(), expected, "snapshot {id}");
        }
    }

    #[test]
    fn chains_are_cut_by_depth_and_by_diff_size() {
        let (_dir, db, ids, snapshots) = setup(16);
        let mut state: StateMap = (0..100).map(|k| (k, k)).collect();
        let mut id = snapshots.save(&ids, &state, None).unwrap();
        for step in 0..(MAX_DEPTH as u64 + 3) {
            state.insert(1000 + step, step);
            id = snapshots.save(&ids, &state, Some(id)).unwrap();
            let stored: StoredSnapshot = db.get(&tables::STATE_SNAPSHOTS, id).unwrap().unwrap();
            assert!(stored.depth <= MAX_DEPTH);
        }
        // Replacing most of the state stores a full copy.
        let replaced: StateMap = (0..100).map(|k| (k, k + 1)).collect();
        let full = snapshots.save(&ids, &replaced, Some(id)).unwrap();
        let stored: StoredSnapshot = db.get(&tables::STATE_SNAPSHOTS, full).unwrap().unwrap();
        assert_eq!(
            (stored.parent, stored.depth, stored.added.len()),
            (None, 0, 100)
        );
        assert!(snapshots.load(424242).is_err());
    }
}
