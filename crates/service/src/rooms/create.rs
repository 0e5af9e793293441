//! Creating a room: the create event (which names a v12 room), then the
//! creator's join, power levels, join rules, history visibility and the
//! optional name and topic, each through the same build-check-append path
//! as any other event.

use ruma::UserId;
use serde_json::{Value as JsonValue, json};

use super::{
    send::NewEvent,
    timeline::{RoomHead, RoomRecord},
};
use crate::{Error, ErrorCode, Result, Services, utils};

/// Room versions this server creates rooms in.
pub const CREATABLE_VERSIONS: &[&str] = &["10", "11", "12"];
pub const DEFAULT_VERSION: &str = "11";

/// What a room is created with.
pub struct NewRoom<'a> {
    pub version: Option<&'a str>,
    /// `public_chat` opens the room to anyone; otherwise invite-only.
    pub public: bool,
    pub name: Option<&'a str>,
    pub topic: Option<&'a str>,
}

impl Services {
    pub async fn create_room(&self, creator: &UserId, new: NewRoom<'_>) -> Result<String> {
        let version = new.version.unwrap_or(DEFAULT_VERSION);
        if !CREATABLE_VERSIONS.contains(&version) {
            return Err(Error::new(
                ErrorCode::Unknown,
                format!("This server does not create rooms of version {version}."),
            )
            .with_status(400));
        }
        let v12 = version == "12";
        let mut create_content = json!({ "room_version": version });
        if !v12 && version != "11" {
            create_content["creator"] = JsonValue::String(creator.to_string());
        }
        // Before v12 the room id is ours to choose; in v12 the create event names it.
        let provisional_id = format!("!{}:{}", utils::random_string(18), self.config.server_name);
        let record = RoomRecord {
            short: self.short_ids.next_id()?,
            version: version.to_owned(),
        };
        let create = self
            .build_check_append(
                &provisional_id,
                &record,
                &RoomHead::default(),
                creator,
                NewEvent {
                    kind: "m.room.create",
                    state_key: Some(""),
                    content: create_content,
                },
            )
            .await?;
        let room_id = if v12 {
            format!("!{}", &create.event_id[1..])
        } else {
            provisional_id
        };
        self.rooms.insert_room(&room_id, &record)?;

        let mut power_users = serde_json::Map::new();
        if !v12 {
            power_users.insert(creator.to_string(), 100.into());
        }
        let mut initial = vec![
            (
                "m.room.member",
                Some(creator.as_str()),
                json!({ "membership": "join" }),
            ),
            (
                "m.room.power_levels",
                Some(""),
                json!({
                    "users": power_users,
                    "users_default": 0,
                    "events": {
                        "m.room.name": 50, "m.room.avatar": 50, "m.room.canonical_alias": 50,
                        "m.room.power_levels": 100, "m.room.history_visibility": 100,
                        "m.room.encryption": 100, "m.room.server_acl": 100,
                        "m.room.tombstone": if v12 { 150 } else { 100 },
                    },
                    "events_default": 0, "state_default": 50,
                    "ban": 50, "kick": 50, "redact": 50, "invite": if new.public { 50 } else { 0 },
                }),
            ),
            (
                "m.room.join_rules",
                Some(""),
                json!({ "join_rule": if new.public { "public" } else { "invite" } }),
            ),
            (
                "m.room.history_visibility",
                Some(""),
                json!({ "history_visibility": "shared" }),
            ),
        ];
        if let Some(name) = new.name {
            initial.push(("m.room.name", Some(""), json!({ "name": name })));
        }
        if let Some(topic) = new.topic {
            initial.push(("m.room.topic", Some(""), json!({ "topic": topic })));
        }
        for (kind, state_key, content) in initial {
            self.send_local_event(
                &room_id,
                creator,
                NewEvent {
                    kind,
                    state_key,
                    content,
                },
            )
            .await?;
        }
        tracing::info!(%room_id, %creator, version, "created a room");
        Ok(room_id)
    }
}
