//! Persistent counters (short ids, event counts): the next value lives in
//! the `global` table and is written in the same batch as whatever uses it.

use std::sync::Mutex;

use conduit_storage::{Batch, Database};

use crate::{Result, tables};

pub(crate) struct Counter {
    name: &'static str,
    next: Mutex<u64>,
}

impl Counter {
    /// The counter `name` as stored, starting at 1.
    pub(crate) fn load(db: &Database, name: &'static str) -> Result<Self> {
        let next = db
            .get(&tables::GLOBAL_JSON, name)?
            .and_then(|v| v.as_u64())
            .unwrap_or(1);
        Ok(Self {
            name,
            next: Mutex::new(next),
        })
    }

    /// The value the next `take` will hand out.
    pub(crate) fn peek(&self) -> u64 {
        *self.next.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the next value and records the one after in `batch`. Values
    /// are never handed out twice, even if that batch is never written.
    pub(crate) fn take(&self, batch: &mut Batch<'_>) -> Result<u64> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let value = *next;
        batch.put(&tables::GLOBAL_JSON, self.name, &(value + 1).into())?;
        *next += 1;
        Ok(value)
    }
}
