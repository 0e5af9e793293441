//! The local public room directory: which rooms are published, and the
//! summaries `/publicRooms` lists, largest rooms first.

use conduit_storage::KeyPrefix;
use ruma::UserId;
use serde_json::{Value as JsonValue, json};

use super::membership::membership_of;
use crate::{Error, Result, Services, tables};

/// The most rooms one `/publicRooms` page lists.
const MAX_DIRECTORY_PAGE: usize = 500;

/// What `/publicRooms` asks.
#[derive(Default)]
pub struct DirectoryQuery {
    pub search: Option<String>,
    /// `Some` keeps rooms whose `room_type` is listed (`None` in the list
    /// standing for rooms without a type).
    pub room_types: Option<Vec<Option<String>>>,
    pub limit: Option<usize>,
    /// Offset into the sorted list, from a `next_batch`/`prev_batch`.
    pub since: usize,
}

pub struct DirectoryPage {
    pub chunk: Vec<JsonValue>,
    pub next: Option<usize>,
    pub prev: Option<usize>,
    pub total: usize,
}

impl DirectoryPage {
    /// The page as `/publicRooms` answers it (the federation API's form).
    pub fn into_json(self) -> JsonValue {
        let mut page = json!({
            "chunk": self.chunk,
            "total_room_count_estimate": self.total,
        });
        if let Some(next) = self.next {
            page["next_batch"] = next.to_string().into();
        }
        if let Some(prev) = self.prev {
            page["prev_batch"] = prev.to_string().into();
        }
        page
    }
}

impl Services {
    /// `PUT /directory/list/room/{roomId}`: moderators (whoever may set
    /// the canonical alias) publish or hide a room.
    pub fn set_room_visibility(&self, user_id: &UserId, room_id: &str, public: bool) -> Result<()> {
        let room = self
            .rooms
            .room(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room."))?;
        if self.rooms.membership(user_id.as_str(), room_id)? != "join"
            || !self
                .room_power(&room)?
                .may_send(user_id.as_str(), "m.room.canonical_alias", true)
        {
            return Err(Error::forbidden(
                "Only room moderators may publish the room.",
            ));
        }
        self.rooms.set_published(room_id, public)
    }

    /// `GET /directory/list/room/{roomId}`.
    pub fn room_is_published(&self, room_id: &str) -> Result<bool> {
        if self.rooms.room(room_id)?.is_none() {
            return Err(Error::not_found("Unknown room."));
        }
        Ok(self.db.get(&tables::PUBLISHED_ROOMS, room_id)?.is_some())
    }

    /// `GET/POST /publicRooms` for this server.
    pub fn public_rooms(&self, query: &DirectoryQuery) -> Result<DirectoryPage> {
        let mut rooms = Vec::new();
        for room_id in self.published_room_ids()? {
            let Some(summary) = self.room_summary(&room_id)? else {
                continue;
            };
            if query.room_types.as_ref().is_some_and(|types| {
                let kind = summary.get("room_type").and_then(|t| t.as_str());
                !types.iter().any(|t| t.as_deref() == kind)
            }) {
                continue;
            }
            if let Some(term) = &query.search
                && !summary_matches(&summary, term)
            {
                continue;
            }
            rooms.push(summary);
        }
        rooms.sort_by(|a, b| {
            let members = |s: &JsonValue| s["num_joined_members"].as_u64().unwrap_or(0);
            members(b)
                .cmp(&members(a))
                .then_with(|| a["room_id"].as_str().cmp(&b["room_id"].as_str()))
        });
        let total = rooms.len();
        let limit = query
            .limit
            .unwrap_or(MAX_DIRECTORY_PAGE)
            .clamp(1, MAX_DIRECTORY_PAGE);
        let start = query.since.min(total);
        let end = (start + limit).min(total);
        Ok(DirectoryPage {
            chunk: rooms.drain(start..end).collect(),
            next: (end < total).then_some(end),
            prev: (start > 0).then(|| start.saturating_sub(limit)),
            total,
        })
    }

    /// A room as the directory shows it; `None` for rooms we do not have.
    pub(crate) fn room_summary(&self, room_id: &str) -> Result<Option<JsonValue>> {
        let Some(room) = self.rooms.room(room_id)? else {
            return Ok(None);
        };
        let state = self.current_state(&room)?;
        let content = |kind: &str, field: &str| -> Result<Option<JsonValue>> {
            Ok(self
                .state_event(&state, kind, "")?
                .and_then(|pdu| pdu.content.get(field).cloned())
                .filter(|v| !v.is_null()))
        };
        let joined = self
            .members(room_id)?
            .iter()
            .filter(|m| membership_of(m) == "join")
            .count();
        let join_rule =
            content("m.room.join_rules", "join_rule")?.unwrap_or_else(|| "invite".into());
        let mut summary = json!({
            "room_id": room_id,
            "num_joined_members": joined,
            "world_readable": content("m.room.history_visibility", "history_visibility")?
                .is_some_and(|v| v == "world_readable"),
            "guest_can_join": content("m.room.guest_access", "guest_access")?
                .is_some_and(|v| v == "can_join"),
            "join_rule": join_rule,
        });
        for (kind, field, key) in [
            ("m.room.name", "name", "name"),
            ("m.room.topic", "topic", "topic"),
            ("m.room.avatar", "url", "avatar_url"),
            ("m.room.canonical_alias", "alias", "canonical_alias"),
            ("m.room.create", "type", "room_type"),
        ] {
            if let Some(value) = content(kind, field)?.filter(JsonValue::is_string) {
                summary[key] = value;
            }
        }
        Ok(Some(summary))
    }

    /// Rooms published in the directory.
    pub(crate) fn published_room_ids(&self) -> Result<Vec<String>> {
        self.db
            .scan_prefix(&tables::PUBLISHED_ROOMS, &KeyPrefix::new())?
            .map(|row| Ok(row?.0))
            .collect()
    }
}

/// Case-insensitive match of a search term against name, topic and alias.
fn summary_matches(summary: &JsonValue, term: &str) -> bool {
    let term = term.to_lowercase();
    ["name", "topic", "canonical_alias"].iter().any(|key| {
        summary[key]
            .as_str()
            .is_some_and(|v| v.to_lowercase().contains(&term))
    })
}
