//! Persistent counters (short ids, stream positions): the next value lives
//! in the `global` table and is written in the same batch as whatever uses
//! it. Batches that take values are written one at a time, in order, so the
//! stored value never goes back (two batches landing out of order would let
//! a restart hand out a value twice).

use std::sync::Mutex;

use conduit_storage::{Batch, Database};

use crate::{Result, tables, utils};

pub(crate) struct Counter {
    name: &'static str,
    next: Mutex<u64>,
}

impl Counter {
    /// The counter `name` as stored, starting at 1.
    pub(crate) fn load(db: &Database, name: &'static str) -> Result<Self> {
        Self::load_from(db, name, 1)
    }

    /// The counter `name` as stored, starting at `first` in a new database.
    pub(crate) fn load_from(db: &Database, name: &'static str, first: u64) -> Result<Self> {
        let next = db
            .get(&tables::GLOBAL_JSON, name)?
            .and_then(|v| v.as_u64())
            .unwrap_or(first);
        Ok(Self {
            name,
            next: Mutex::new(next),
        })
    }

    /// The value the next `take` will hand out.
    pub(crate) fn peek(&self) -> u64 {
        *utils::locked(&self.next)
    }

    /// Takes the next value, lets `fill` add the rows that use it to
    /// `batch`, and writes the batch with the counter. `written` runs after
    /// the write, before anyone can see the new value through [`peek`].
    /// A batch that fails to build or write takes no value.
    ///
    /// [`peek`]: Self::peek
    pub(crate) fn write_next(
        &self,
        db: &Database,
        mut batch: Batch<'_>,
        fill: impl FnOnce(&mut Batch<'_>, u64) -> Result<()>,
        written: impl FnOnce(u64),
    ) -> Result<u64> {
        let mut next = utils::locked(&self.next);
        let value = *next;
        fill(&mut batch, value)?;
        batch.put(&tables::GLOBAL_JSON, self.name, &(value + 1).into())?;
        db.write(batch)?;
        written(value);
        *next = value + 1;
        Ok(value)
    }

    /// Takes `count` consecutive values at once, the first of which `fill`
    /// is given, as [`write_next`] does for one (short ids in bulk).
    ///
    /// [`write_next`]: Self::write_next
    pub(crate) fn write_many(
        &self,
        db: &Database,
        mut batch: Batch<'_>,
        count: u64,
        fill: impl FnOnce(&mut Batch<'_>, u64) -> Result<()>,
    ) -> Result<u64> {
        let mut next = utils::locked(&self.next);
        let first = *next;
        fill(&mut batch, first)?;
        batch.put(&tables::GLOBAL_JSON, self.name, &(first + count).into())?;
        db.write(batch)?;
        *next = first + count;
        Ok(first)
    }
}
