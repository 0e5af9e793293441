//! Per-user account data, global and per room, and push rules (which the
//! spec stores as the `m.push_rules` account data event).

use std::sync::Arc;

use conduit_storage::{Database, KeyPrefix, Str};
use ruma::{RoomId, UserId, push::Ruleset};
use serde_json::{Value as JsonValue, json};

use crate::{Error, Result, tables};

pub struct AccountData {
    db: Arc<Database>,
}

/// Account data types a client may not write directly: the server owns them.
const SERVER_MANAGED: &[&str] = &["m.push_rules", "m.fully_read"];

impl AccountData {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    fn room_key(room_id: Option<&RoomId>) -> &str {
        room_id.map_or("", RoomId::as_str)
    }

    pub fn get(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        event_type: &str,
    ) -> Result<Option<JsonValue>> {
        let key = (user_id.as_str(), Self::room_key(room_id), event_type);
        Ok(self.db.get(&tables::ACCOUNT_DATA, key)?)
    }

    /// Stores account data a client sent. Content must be a JSON object.
    pub fn set_from_client(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        event_type: &str,
        content: &JsonValue,
    ) -> Result<()> {
        if SERVER_MANAGED.contains(&event_type) {
            return Err(Error::bad_json(format!(
                "Cannot set {event_type} through the account data API."
            ))
            .with_status(405));
        }
        if !content.is_object() {
            return Err(Error::bad_json(
                "Account data content must be a JSON object.",
            ));
        }
        self.set(user_id, room_id, event_type, content)
    }

    fn set(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        event_type: &str,
        content: &JsonValue,
    ) -> Result<()> {
        let key = (user_id.as_str(), Self::room_key(room_id), event_type);
        let mut batch = self.db.batch();
        batch.put(&tables::ACCOUNT_DATA, key, content)?;
        self.db.write(batch)?;
        Ok(())
    }

    /// All global account data of a user, `(type, content)`.
    pub fn global(&self, user_id: &UserId) -> Result<Vec<(String, JsonValue)>> {
        let prefix = KeyPrefix::new()
            .push::<Str>(user_id.as_str())
            .push::<Str>("");
        self.db
            .scan_prefix(&tables::ACCOUNT_DATA, &prefix)?
            .map(|row| {
                let ((_, _, event_type), content) = row?;
                Ok((event_type, content))
            })
            .collect()
    }

    /// The user's push rules: what they stored, or the spec's defaults.
    pub fn push_rules(&self, user_id: &UserId) -> Result<Ruleset> {
        let stored = self.get(user_id, None, "m.push_rules")?;
        match stored.and_then(|content| content.get("global").cloned()) {
            Some(global) => serde_json::from_value(global).map_err(Error::internal),
            None => Ok(Ruleset::server_default(user_id)),
        }
    }

    pub fn set_push_rules(&self, user_id: &UserId, rules: &Ruleset) -> Result<()> {
        let content = json!({ "global": rules });
        self.set(user_id, None, "m.push_rules", &content)
    }
}

#[cfg(test)]
mod tests {
    use ruma::user_id;

    use super::*;

    #[test]
    fn global_and_room_data_are_apart_and_server_types_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path(), tables::ALL, 1 << 20).unwrap());
        let data = AccountData::new(db);
        let alice = user_id!("@alice:x");
        let room = ruma::room_id!("!r:x");
        data.set_from_client(alice, None, "a.b", &json!({"g": 1}))
            .unwrap();
        data.set_from_client(alice, Some(room), "a.b", &json!({"r": 1}))
            .unwrap();
        assert_eq!(data.get(alice, None, "a.b").unwrap(), Some(json!({"g": 1})));
        assert_eq!(
            data.get(alice, Some(room), "a.b").unwrap(),
            Some(json!({"r": 1}))
        );
        assert_eq!(
            data.global(alice).unwrap(),
            vec![("a.b".into(), json!({"g": 1}))]
        );
        assert!(
            data.set_from_client(alice, None, "m.push_rules", &json!({}))
                .is_err()
        );
        assert!(data.set_from_client(alice, None, "x", &json!([1])).is_err());
        assert!(
            data.push_rules(alice).unwrap().override_.len() > 3,
            "defaults"
        );
    }
}
