//! Creating a room: the create event (which names a v12 room), then the
//! creator's join, power levels, join rules, history visibility and the
//! optional name and topic, each through the same build-check-append path
//! as any other event.

use ruma::{OwnedUserId, UserId};
use serde_json::{Value as JsonValue, json};

use super::{
    send::NewEvent,
    timeline::{RoomHead, RoomRecord},
};
use crate::{Error, ErrorCode, Result, Services, utils};

/// Room versions this server creates rooms in.
pub const CREATABLE_VERSIONS: &[&str] = &["10", "11", "12"];
pub const DEFAULT_VERSION: &str = "11";

/// The presets of `POST /createRoom`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

/// What a room is created with (the parameters of `POST /createRoom`).
pub struct NewRoom<'a> {
    pub version: Option<&'a str>,
    pub preset: Preset,
    pub name: Option<&'a str>,
    pub topic: Option<&'a str>,
    /// Extra content for the create event (`room_version` and `creator` are ours).
    pub creation_content: Option<serde_json::Map<String, JsonValue>>,
    /// Merged over the default power levels, key by key.
    pub power_level_content_override: Option<serde_json::Map<String, JsonValue>>,
    /// `(type, state_key, content)`, sent after the preset's events.
    pub initial_state: Vec<(String, String, JsonValue)>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    /// The localpart of an alias to create, e.g. `friends` for `#friends:server`.
    pub alias_localpart: Option<&'a str>,
    /// Publish the room in the server's room directory.
    pub publish: bool,
}

impl NewRoom<'_> {
    pub fn simple(preset: Preset) -> Self {
        Self {
            version: None,
            preset,
            name: None,
            topic: None,
            creation_content: None,
            power_level_content_override: None,
            initial_state: Vec::new(),
            invite: Vec::new(),
            is_direct: false,
            alias_localpart: None,
            publish: false,
        }
    }
}

impl Services {
    /// Creates a room as `POST /createRoom` describes: create event,
    /// creator's join, power levels, canonical alias, the preset's join
    /// rules, history visibility and guest access, the initial state, name
    /// and topic, then invites.
    pub async fn create_room(&self, creator: &UserId, new: NewRoom<'_>) -> Result<String> {
        let version = new.version.unwrap_or(DEFAULT_VERSION);
        if !CREATABLE_VERSIONS.contains(&version) {
            return Err(Error::new(
                ErrorCode::UnsupportedRoomVersion,
                format!("This server does not create rooms of version {version}."),
            ));
        }
        let alias = match new.alias_localpart {
            Some(localpart) => {
                let alias = self.check_new_alias(localpart)?;
                self.check_alias_namespace(&alias, creator)?;
                Some(alias)
            }
            None => None,
        };
        let v12 = version == "12";
        let mut create_content = new.creation_content.clone().unwrap_or_default();
        create_content.insert("room_version".into(), version.into());
        if !v12 && version != "11" {
            create_content.insert("creator".into(), creator.as_str().into());
        } else {
            create_content.remove("creator");
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
                    content: JsonValue::Object(create_content),
                },
                None,
            )
            .await?;
        let room_id = if v12 {
            format!("!{}", &create.event_id[1..])
        } else {
            provisional_id
        };
        self.rooms.insert_room(&room_id, &record)?;

        let private = new.preset != Preset::PublicChat;
        let mut users = serde_json::Map::new();
        if !v12 {
            users.insert(creator.to_string(), 100.into());
        }
        if new.preset == Preset::TrustedPrivateChat {
            for user in &new.invite {
                users.insert(user.to_string(), 100.into());
            }
        }
        let mut power_levels = json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50, "m.room.avatar": 50, "m.room.canonical_alias": 50,
                "m.room.power_levels": 100, "m.room.history_visibility": 100,
                "m.room.encryption": 100, "m.room.server_acl": 100,
                "m.room.tombstone": if v12 { 150 } else { 100 },
            },
            "events_default": 0, "state_default": 50,
            "ban": 50, "kick": 50, "redact": 50, "invite": if private { 0 } else { 50 },
        });
        if let (Some(overrides), JsonValue::Object(levels)) =
            (new.power_level_content_override.clone(), &mut power_levels)
        {
            levels.extend(overrides);
        }

        // The creator's join carries their profile, as every join does.
        let mut join = json!({ "membership": "join" });
        self.add_profile(&mut join, creator)?;
        let mut events: Vec<(String, String, JsonValue)> = vec![
            ("m.room.member".into(), creator.to_string(), join),
            ("m.room.power_levels".into(), String::new(), power_levels),
        ];
        if let Some(alias) = &alias {
            events.push((
                "m.room.canonical_alias".into(),
                String::new(),
                json!({ "alias": alias }),
            ));
        }
        // The preset's state, unless initial_state sets the same key.
        let preset_state = [
            (
                "m.room.join_rules",
                json!({ "join_rule": if private { "invite" } else { "public" } }),
            ),
            (
                "m.room.history_visibility",
                json!({ "history_visibility": "shared" }),
            ),
            (
                "m.room.guest_access",
                json!({ "guest_access": if private { "can_join" } else { "forbidden" } }),
            ),
        ];
        for (kind, content) in preset_state {
            if !new
                .initial_state
                .iter()
                .any(|(k, key, _)| k == kind && key.is_empty())
            {
                events.push((kind.into(), String::new(), content));
            }
        }
        events.extend(new.initial_state.iter().cloned());
        if let Some(name) = new.name {
            events.push(("m.room.name".into(), String::new(), json!({ "name": name })));
        }
        if let Some(topic) = new.topic {
            events.push((
                "m.room.topic".into(),
                String::new(),
                json!({ "topic": topic }),
            ));
        }
        let mut remote_invites = Vec::new();
        for user in &new.invite {
            let mut content = json!({ "membership": "invite" });
            if new.is_direct {
                content["is_direct"] = true.into();
            }
            if user.server_name() == self.config.server_name {
                events.push(("m.room.member".into(), user.to_string(), content));
            } else {
                remote_invites.push((user, content));
            }
        }
        for (kind, state_key, content) in events {
            self.send_local_event(
                &room_id,
                creator,
                NewEvent {
                    kind: &kind,
                    state_key: Some(&state_key),
                    content,
                },
            )
            .await?;
        }
        for (user, content) in remote_invites {
            // The room exists whether or not the invitee's server answers.
            if let Err(e) = self
                .invite_remote_user(&room_id, creator, user, content)
                .await
            {
                tracing::info!(%room_id, %user, "invite to a new room failed: {e}");
            }
        }
        if let Some(alias) = &alias {
            self.put_alias(alias, &room_id, creator)?;
        }
        if new.publish {
            self.rooms.set_published(&room_id, true)?;
        }
        tracing::info!(%room_id, %creator, version, "created a room");
        Ok(room_id)
    }

    /// `#localpart:server` if it is valid and free, else the spec's errors.
    fn check_new_alias(&self, localpart: &str) -> Result<String> {
        if localpart.is_empty()
            || localpart.contains([':', '#'])
            || localpart.chars().any(char::is_whitespace)
        {
            return Err(Error::new(
                ErrorCode::InvalidParam,
                "Invalid room alias name.",
            ));
        }
        let alias = format!("#{localpart}:{}", self.config.server_name);
        if self.alias(&alias)?.is_some() {
            return Err(Error::new(
                ErrorCode::RoomInUse,
                "This room alias is already taken.",
            ));
        }
        Ok(alias)
    }
}
