//! Short ids: every event id and every `(event type, state key)` gets a
//! dense `u64` on first sight, so state maps, resolution and indexes work on
//! integers. A mapping is written at once, in its own batch: an id that
//! ends up unused costs nothing, and no later batch can race it.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use conduit_storage::Database;

use crate::{Error, Result, counter::Counter, tables, utils};

/// Names given new ids in one write, at most.
const BULK_BATCH: usize = 8192;

pub struct ShortIds {
    db: Arc<Database>,
    ids: Counter,
    /// Held from "is there an id?" to "written", so one name gets one id.
    allocate: Mutex<()>,
}

impl ShortIds {
    pub(crate) fn new(db: Arc<Database>) -> Result<Self> {
        Ok(Self {
            ids: Counter::load(&db, "next_short_id")?,
            db,
            allocate: Mutex::new(()),
        })
    }

    /// A fresh id, for names that are new by construction (state snapshots).
    pub fn next_id(&self) -> Result<u64> {
        self.ids
            .write_next(&self.db, self.db.batch(), |_, _| Ok(()), |_| {})
    }

    pub fn event_short(&self, event_id: &str) -> Result<Option<u64>> {
        Ok(self.db.get(&tables::EVENTID_SHORT, event_id)?)
    }

    pub fn event_id(&self, short: u64) -> Result<Option<String>> {
        Ok(self.db.get(&tables::SHORT_EVENTID, short)?)
    }

    pub fn get_or_create_event_short(&self, event_id: &str) -> Result<u64> {
        if let Some(short) = self.event_short(event_id)? {
            return Ok(short);
        }
        let _allocating = utils::locked(&self.allocate);
        if let Some(short) = self.event_short(event_id)? {
            return Ok(short);
        }
        self.ids.write_next(
            &self.db,
            self.db.batch(),
            |batch, short| {
                batch.put(&tables::EVENTID_SHORT, event_id, short)?;
                batch.put(&tables::SHORT_EVENTID, short, event_id)?;
                Ok(())
            },
            |_| {},
        )
    }

    /// The short ids of many event ids, those new created in one batch
    /// (the thousands of events of a join's state and auth chain).
    pub fn get_or_create_event_shorts<'a>(
        &self,
        event_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<HashMap<&'a str, u64>> {
        self.bulk(
            event_ids,
            |id| self.event_short(id),
            |batch, id, short| {
                batch.put(&tables::EVENTID_SHORT, id, short)?;
                batch.put(&tables::SHORT_EVENTID, short, id)?;
                Ok(())
            },
        )
    }

    /// The short ids of many `(event type, state key)` pairs, as
    /// [`get_or_create_event_shorts`](Self::get_or_create_event_shorts).
    pub fn get_or_create_state_key_shorts<'a>(
        &self,
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<HashMap<(&'a str, &'a str), u64>> {
        self.bulk(
            keys,
            |(kind, key)| self.state_key_short(kind, key),
            |batch, (kind, key), short| {
                batch.put(&tables::STATEKEY_SHORT, (kind, key), short)?;
                batch.put(
                    &tables::SHORT_STATEKEY,
                    short,
                    &(kind.to_owned(), key.to_owned()),
                )?;
                Ok(())
            },
        )
    }

    /// Looks every name up and gives the unknown ones consecutive new ids,
    /// written in batches of [`BULK_BATCH`] names.
    fn bulk<K: Copy + Eq + std::hash::Hash>(
        &self,
        names: impl IntoIterator<Item = K>,
        find: impl Fn(K) -> Result<Option<u64>>,
        put: impl Fn(&mut conduit_storage::Batch<'_>, K, u64) -> Result<()>,
    ) -> Result<HashMap<K, u64>> {
        let _allocating = utils::locked(&self.allocate);
        let mut found = HashMap::new();
        let mut new = Vec::new();
        let mut queued = HashSet::new();
        for name in names {
            if found.contains_key(&name) || queued.contains(&name) {
                continue;
            }
            match find(name)? {
                Some(short) => {
                    found.insert(name, short);
                }
                None => {
                    queued.insert(name);
                    new.push(name);
                }
            }
        }
        for chunk in new.chunks(BULK_BATCH) {
            let first = self.ids.write_many(
                &self.db,
                self.db.batch(),
                chunk.len() as u64,
                |batch, first| {
                    for (name, short) in chunk.iter().zip(first..) {
                        put(batch, *name, short)?;
                    }
                    Ok(())
                },
            )?;
            found.extend(chunk.iter().copied().zip(first..));
        }
        Ok(found)
    }

    pub fn state_key_short(&self, event_type: &str, state_key: &str) -> Result<Option<u64>> {
        Ok(self
            .db
            .get(&tables::STATEKEY_SHORT, (event_type, state_key))?)
    }

    /// The `(event type, state key)` behind a short id.
    pub fn state_key(&self, short: u64) -> Result<(String, String)> {
        self.db
            .get(&tables::SHORT_STATEKEY, short)?
            .ok_or_else(|| Error::internal(format!("unknown short state key {short}")))
    }

    pub fn get_or_create_state_key_short(&self, event_type: &str, state_key: &str) -> Result<u64> {
        if let Some(short) = self.state_key_short(event_type, state_key)? {
            return Ok(short);
        }
        let _allocating = utils::locked(&self.allocate);
        if let Some(short) = self.state_key_short(event_type, state_key)? {
            return Ok(short);
        }
        self.ids.write_next(
            &self.db,
            self.db.batch(),
            |batch, short| {
                batch.put(&tables::STATEKEY_SHORT, (event_type, state_key), short)?;
                batch.put(
                    &tables::SHORT_STATEKEY,
                    short,
                    &(event_type.to_owned(), state_key.to_owned()),
                )?;
                Ok(())
            },
            |_| {},
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_distinct_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, k);
        {
            let db = Arc::new(Database::open(dir.path(), tables::ALL, 1 << 20).unwrap());
            let ids = ShortIds::new(db).unwrap();
            a = ids.get_or_create_event_short("$a").unwrap();
            b = ids.get_or_create_event_short("$b").unwrap();
            k = ids
                .get_or_create_state_key_short("m.room.member", "@a:x")
                .unwrap();
            assert_eq!(ids.get_or_create_event_short("$a").unwrap(), a);
            assert_eq!(ids.event_id(b).unwrap().as_deref(), Some("$b"));
            assert_eq!(
                ids.state_key(k).unwrap(),
                ("m.room.member".into(), "@a:x".into())
            );
            assert_eq!(ids.state_key_short("m.room.member", "@b:x").unwrap(), None);
        }
        assert!(a != b && b != k && a != k);
        let db = Arc::new(Database::open(dir.path(), tables::ALL, 1 << 20).unwrap());
        let ids = ShortIds::new(db).unwrap();
        assert_eq!(ids.event_short("$a").unwrap(), Some(a));
        let fresh = ids.get_or_create_event_short("$c").unwrap();
        assert!(
            fresh > a && fresh > b && fresh > k,
            "the counter continues after a restart"
        );
    }

    #[test]
    fn bulk_allocation_keeps_known_ids_and_names_each_new_one_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path(), tables::ALL, 1 << 20).unwrap());
        let ids = ShortIds::new(db).unwrap();
        let known = ids.get_or_create_event_short("$known").unwrap();
        let names: Vec<String> = (0..20_000).map(|i| format!("${}", i % 15_000)).collect();
        let got = ids
            .get_or_create_event_shorts(
                names.iter().map(String::as_str).chain(["$known", "$known"]),
            )
            .unwrap();
        assert_eq!(got.len(), 15_001);
        assert_eq!(got["$known"], known);
        let distinct: std::collections::HashSet<u64> = got.values().copied().collect();
        assert_eq!(distinct.len(), got.len(), "one id per name");
        // Written: the one-at-a-time path finds them, and fresh ids follow.
        assert_eq!(ids.event_short("$14999").unwrap(), Some(got["$14999"]));
        assert_eq!(ids.event_id(got["$7"]).unwrap().as_deref(), Some("$7"));
        let next = ids.get_or_create_event_short("$after").unwrap();
        assert!(distinct.iter().all(|&id| id < next));
        let keys = ids
            .get_or_create_state_key_shorts([("m.room.member", "@a:x"), ("m.room.member", "@a:x")])
            .unwrap();
        assert_eq!(
            ids.state_key(keys[&("m.room.member", "@a:x")]).unwrap(),
            ("m.room.member".into(), "@a:x".into())
        );
    }

    #[test]
    fn concurrent_allocation_gives_one_id_per_name() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path(), tables::ALL, 1 << 20).unwrap());
        let ids = Arc::new(ShortIds::new(db).unwrap());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let ids = ids.clone();
                std::thread::spawn(move || ids.get_or_create_event_short("$same").unwrap())
            })
            .collect();
        let got: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(got.iter().all(|id| *id == got[0]));
    }
}
