//! Profile fields (`displayname`, `avatar_url`) of local users.

use conduit_storage::{KeyPrefix, Str};
use ruma::UserId;
use serde_json::Value as JsonValue;

use super::Users;
use crate::{Result, tables};

impl Users {
    pub fn profile_field(&self, user_id: &UserId, field: &str) -> Result<Option<JsonValue>> {
        Ok(self.db.get(&tables::PROFILES, (user_id.as_str(), field))?)
    }

    /// Sets a profile field, or removes it with `None`.
    pub fn set_profile_field(
        &self,
        user_id: &UserId,
        field: &str,
        value: Option<&JsonValue>,
    ) -> Result<()> {
        let mut batch = self.db.batch();
        match value {
            Some(value) => batch.put(&tables::PROFILES, (user_id.as_str(), field), value)?,
            None => batch.delete(&tables::PROFILES, (user_id.as_str(), field))?,
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// Every profile field of a user.
    pub fn profile(&self, user_id: &UserId) -> Result<Vec<(String, JsonValue)>> {
        let prefix = KeyPrefix::new().push::<Str>(user_id.as_str());
        self.db
            .scan_prefix(&tables::PROFILES, &prefix)?
            .map(|row| {
                let ((_, field), value) = row?;
                Ok((field, value))
            })
            .collect()
    }
}
