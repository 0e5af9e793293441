//! Sync filters uploaded by clients, stored as the JSON they sent.

use std::sync::Arc;

use conduit_storage::Database;
use ruma::UserId;
use serde_json::Value as JsonValue;

use crate::{Result, tables, utils};

pub struct Filters {
    db: Arc<Database>,
}

impl Filters {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    /// Stores a filter and returns its new id.
    pub fn create(&self, user_id: &UserId, filter: &JsonValue) -> Result<String> {
        let id = utils::random_string(12);
        let mut batch = self.db.batch();
        batch.put(&tables::FILTERS, (user_id.as_str(), id.as_str()), filter)?;
        self.db.write(batch)?;
        Ok(id)
    }

    pub fn get(&self, user_id: &UserId, filter_id: &str) -> Result<Option<JsonValue>> {
        Ok(self
            .db
            .get(&tables::FILTERS, (user_id.as_str(), filter_id))?)
    }
}
