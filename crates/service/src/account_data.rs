//! Per-user account data, global and per room, and push rules (which the
//! spec stores as the `m.push_rules` account data event).

use std::sync::Arc;

use conduit_storage::{Database, KeyPrefix, Str, U64};
use ruma::{RoomId, UserId, push::Ruleset};
use serde_json::{Value as JsonValue, json};

use crate::{Error, Result, stream::Stream, tables, utils};

pub struct AccountData {
    db: Arc<Database>,
    stream: Arc<Stream>,
    /// Serialises writes: each replaces the previous change row of its key,
    /// which two writes at once would both read and both leave behind.
    writing: std::sync::Mutex<()>,
    tagging: std::sync::Mutex<()>,
}

/// Account data that changed, as sync shows it.
pub struct Changed {
    /// The room, or `None` for global account data.
    pub room_id: Option<String>,
    pub event_type: String,
    pub content: JsonValue,
    /// The stream position of the change.
    pub position: u64,
}

/// Account data types a client may not write directly: the server owns them.
const SERVER_MANAGED: &[&str] = &["m.push_rules", "m.fully_read"];

impl AccountData {
    pub(crate) fn new(db: Arc<Database>, stream: Arc<Stream>) -> Self {
        Self {
            db,
            stream,
            writing: std::sync::Mutex::default(),
            tagging: std::sync::Mutex::default(),
        }
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

    /// Puts one tag on a room (`info`) or takes it off (`None`), keeping
    /// the room's other tags (`m.tag`).
    pub fn set_tag(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        tag: &str,
        info: Option<JsonValue>,
    ) -> Result<()> {
        // One tag change at a time: each reads the others it keeps.
        let _tagging = utils::locked(&self.tagging);
        let mut content = self
            .get(user_id, Some(room_id), "m.tag")?
            .filter(|c| c.get("tags").is_some_and(JsonValue::is_object))
            .unwrap_or_else(|| serde_json::json!({ "tags": {} }));
        let tags = content["tags"].as_object_mut().expect("checked above");
        match info {
            Some(info) => {
                tags.insert(tag.to_owned(), info);
            }
            None => {
                tags.remove(tag);
            }
        }
        self.set(user_id, Some(room_id), "m.tag", &content)
    }

    /// A room's tags as the user set them.
    pub fn tags(&self, user_id: &UserId, room_id: &RoomId) -> Result<JsonValue> {
        Ok(self
            .get(user_id, Some(room_id), "m.tag")?
            .and_then(|c| c.get("tags").filter(|t| t.is_object()).cloned())
            .unwrap_or_else(|| serde_json::json!({})))
    }

    /// Stores account data and records the change for incremental sync.
    pub(crate) fn set(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        event_type: &str,
        content: &JsonValue,
    ) -> Result<()> {
        let room = Self::room_key(room_id);
        let key = (user_id.as_str(), room, event_type);
        let _writing = utils::locked(&self.writing);
        let mut batch = self.db.batch();
        batch.put(&tables::ACCOUNT_DATA, key, content)?;
        if let Some(old) = self.db.get(&tables::ACCOUNT_DATA_POSITIONS, key)? {
            batch.delete(&tables::ACCOUNT_DATA_CHANGES, (user_id.as_str(), old))?;
        }
        let fill = |batch: &mut conduit_storage::Batch<'_>, position: u64| {
            batch.put(
                &tables::ACCOUNT_DATA_CHANGES,
                (user_id.as_str(), position),
                &(room.to_owned(), event_type.to_owned()),
            )?;
            batch.put(&tables::ACCOUNT_DATA_POSITIONS, key, position)?;
            Ok(())
        };
        self.stream.write(&self.db, batch, None, fill, |position| {
            self.stream.mark_user(user_id.as_str(), position);
        })?;
        Ok(())
    }

    /// Account data changed at positions in `since..until`, as it is now.
    pub fn changed(&self, user_id: &UserId, since: u64, until: u64) -> Result<Vec<Changed>> {
        let prefix = KeyPrefix::new().push::<Str>(user_id.as_str());
        let start = KeyPrefix::new()
            .push::<Str>(user_id.as_str())
            .push::<U64>(since);
        let mut changed = Vec::new();
        for row in self.db.scan_from(
            &tables::ACCOUNT_DATA_CHANGES,
            &prefix,
            start.as_bytes(),
            true,
        )? {
            let ((_, position), (room, event_type)) = row?;
            if position >= until {
                break;
            }
            let room_id = (!room.is_empty()).then_some(room);
            let key = (
                user_id.as_str(),
                room_id.as_deref().unwrap_or(""),
                event_type.as_str(),
            );
            if let Some(content) = self.db.get(&tables::ACCOUNT_DATA, key)? {
                changed.push(Changed {
                    room_id,
                    event_type,
                    content,
                    position,
                });
            }
        }
        Ok(changed)
    }

    /// All account data a user keeps in one room, `(type, content)`.
    pub fn in_room(&self, user_id: &UserId, room_id: &str) -> Result<Vec<(String, JsonValue)>> {
        let prefix = KeyPrefix::new()
            .push::<Str>(user_id.as_str())
            .push::<Str>(room_id);
        self.db
            .scan_prefix(&tables::ACCOUNT_DATA, &prefix)?
            .map(|row| {
                let ((_, _, event_type), content) = row?;
                Ok((event_type, content))
            })
            .collect()
    }

    /// All global account data of a user, `(type, content)`.
    pub fn global(&self, user_id: &UserId) -> Result<Vec<(String, JsonValue)>> {
        self.in_room(user_id, "")
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
        let stream = Arc::new(Stream::new(&db).unwrap());
        let data = AccountData::new(db, stream);
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
