//! Spaces and room previews: `GET /v1/rooms/{roomId}/hierarchy` walks a
//! space's `m.space.child` events breadth first, and
//! `GET /v1/room_summary/{roomIdOrAlias}` describes one room; rooms this
//! server is not in are asked of other servers (`/federation/v1/hierarchy`,
//! which this server answers too).

use std::collections::{HashMap, HashSet, VecDeque};

use ruma::{OwnedServerName, ServerName, UserId};
use serde_json::{Value as JsonValue, json};

use super::timeline::RoomRecord;
use crate::{Error, Result, Services, federation::incoming::outliers::urlencode};

/// Rooms one walk visits at most, whatever the space.
const MAX_ROOMS: usize = 500;
/// Servers asked about one room at most.
const MAX_VIA: usize = 3;
/// How deep a walk goes at most.
const MAX_DEPTH: usize = 10;

/// A space child: the room, where to ask about it, whether suggested.
struct Child {
    room_id: String,
    via: Vec<OwnedServerName>,
    suggested: bool,
}

/// What a hierarchy request asks.
pub struct HierarchyRequest<'a> {
    pub room_id: &'a str,
    pub suggested_only: bool,
    pub max_depth: Option<usize>,
    pub limit: Option<usize>,
    /// Rooms of the walk already returned (the `from` token).
    pub skip: usize,
}

impl Services {
    /// A space's `m.space.child` events that name a child (with a `via`).
    pub(crate) fn space_child_events(
        &self,
        state: &conduit_state_res::StateMap,
    ) -> Result<Vec<super::pdu::Pdu>> {
        let mut children = Vec::new();
        for (&key, &event) in state.iter() {
            let (kind, _) = self.short_ids.state_key(key)?;
            if kind != "m.space.child" {
                continue;
            }
            if let Some(pdu) = self.rooms.pdu(event, &self.short_ids)?
                && pdu
                    .content
                    .get("via")
                    .and_then(JsonValue::as_array)
                    .is_some_and(|v| !v.is_empty())
            {
                children.push(pdu);
            }
        }
        Ok(children)
    }

    /// A room as hierarchies show it: the directory summary, the space's
    /// child events (stripped), and for restricted rooms the rooms they
    /// allow. `None` for rooms this server does not have.
    fn hierarchy_entry(&self, room_id: &str) -> Result<Option<JsonValue>> {
        let (Some(mut entry), Some(record)) =
            (self.room_summary(room_id)?, self.rooms.room(room_id)?)
        else {
            return Ok(None);
        };
        let state = self.current_state(&record)?;
        let mut children = Vec::new();
        for pdu in self.space_child_events(&state)? {
            children.push(json!({
                "type": pdu.kind,
                "state_key": pdu.state_key,
                "sender": pdu.sender,
                "content": pdu.content,
                "origin_server_ts": pdu.origin_server_ts,
            }));
        }
        entry["children_state"] = JsonValue::Array(children);
        if let Some(rules) = self.state_event(&state, "m.room.join_rules", "")?
            && let Some(allow) = rules.content.get("allow").and_then(JsonValue::as_array)
        {
            let allowed: Vec<&JsonValue> = allow
                .iter()
                .filter(|a| a.get("type").and_then(JsonValue::as_str) == Some("m.room_membership"))
                .filter_map(|a| a.get("room_id"))
                .collect();
            if !allowed.is_empty() {
                entry["allowed_room_ids"] = json!(allowed);
            }
        }
        Ok(Some(entry))
    }

    /// Whether a room shows in a hierarchy: rooms anyone may read or ask to
    /// join, or one the asker is in.
    fn visible_in_hierarchy(&self, entry: &JsonValue, is_member: bool) -> bool {
        is_member
            || entry["world_readable"] == true
            || matches!(
                entry["join_rule"].as_str(),
                Some("public" | "knock" | "knock_restricted" | "restricted")
            )
    }

    fn children_of(entry: &JsonValue) -> Vec<Child> {
        entry["children_state"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .filter_map(|event| {
                        let room_id = event["state_key"].as_str()?.to_owned();
                        let via = event["content"]["via"]
                            .as_array()?
                            .iter()
                            .filter_map(JsonValue::as_str)
                            .filter_map(|s| OwnedServerName::try_from(s).ok())
                            .collect::<Vec<_>>();
                        let suggested = event["content"]["suggested"] == true;
                        (!via.is_empty()).then_some(Child {
                            room_id,
                            via,
                            suggested,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `GET /v1/rooms/{roomId}/hierarchy` for a local user: the rooms of the
    /// walk in breadth-first order, a page at a time; the next page's
    /// `from`, if any.
    pub async fn space_hierarchy(
        &self,
        user: &UserId,
        request: &HierarchyRequest<'_>,
    ) -> Result<(Vec<JsonValue>, Option<usize>)> {
        let max_depth = request.max_depth.unwrap_or(MAX_DEPTH).min(MAX_DEPTH);
        let mut found: Vec<JsonValue> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut remote: HashMap<String, JsonValue> = HashMap::new();
        let mut queue: VecDeque<(String, usize, Vec<OwnedServerName>)> = VecDeque::new();
        queue.push_back((request.room_id.to_owned(), 0, Vec::new()));
        while let Some((room_id, depth, via)) = queue.pop_front() {
            // Bounded by rooms visited, not found: children that lead nowhere
            // cost requests too.
            if seen.len() >= MAX_ROOMS || !seen.insert(room_id.clone()) {
                continue;
            }
            let is_member = self.rooms.membership(user.as_str(), &room_id)? == "join";
            let entry = match self.hierarchy_entry(&room_id)? {
                Some(entry) => Some(entry),
                None => match remote.remove(&room_id) {
                    Some(entry) => Some(entry),
                    None => self.remote_hierarchy(&room_id, &via, &mut remote).await,
                },
            };
            let Some(entry) = entry else {
                if depth == 0 {
                    return Err(Error::not_found("This server does not know the space."));
                }
                continue;
            };
            if !self.visible_in_hierarchy(&entry, is_member) {
                if depth == 0 {
                    return Err(Error::forbidden("You may not see this space."));
                }
                continue;
            }
            if depth < max_depth {
                for child in Self::children_of(&entry) {
                    if !request.suggested_only || child.suggested {
                        queue.push_back((child.room_id, depth + 1, child.via));
                    }
                }
            }
            found.push(entry);
        }
        let limit = request.limit.unwrap_or(50).clamp(1, 100);
        let total = found.len();
        let page: Vec<JsonValue> = found.into_iter().skip(request.skip).take(limit).collect();
        let next = (request.skip + limit < total).then_some(request.skip + limit);
        Ok((page, next))
    }

    /// `GET /v1/room_summary/{roomIdOrAlias}`: a room's summary (with its
    /// version and encryption when this server has it) and the asker's
    /// membership, for members and for rooms anyone may read or ask to
    /// join; other servers' rooms are asked of `via` and the alias's or
    /// room id's server.
    pub async fn room_preview(
        &self,
        user: Option<&UserId>,
        room_or_alias: &str,
        via: &[OwnedServerName],
    ) -> Result<(JsonValue, Option<String>)> {
        let (room_id, mut servers) = if room_or_alias.starts_with('#') {
            self.resolve_room_alias(room_or_alias).await?
        } else {
            (room_or_alias.to_owned(), Vec::new())
        };
        servers.extend(via.iter().cloned());
        let membership = match user {
            Some(user) if self.rooms.has_membership(user.as_str(), &room_id)? => {
                Some(self.rooms.membership(user.as_str(), &room_id)?)
            }
            _ => None,
        };
        let is_member = matches!(membership.as_deref(), Some("join" | "invite" | "knock"));
        let entry = match self.hierarchy_entry(&room_id)? {
            Some(mut entry) => {
                if let Some(record) = self.rooms.room(&room_id)? {
                    entry["room_version"] = record.version.clone().into();
                    let state = self.current_state(&record)?;
                    if let Some(encryption) = self.state_event(&state, "m.room.encryption", "")?
                        && let Some(algorithm) = encryption.content.get("algorithm")
                    {
                        entry["encryption"] = algorithm.clone();
                    }
                }
                entry
            }
            None => {
                let servers = self.candidate_servers(&room_id, &servers);
                self.remote_hierarchy(&room_id, &servers, &mut HashMap::new())
                    .await
                    .ok_or_else(|| Error::not_found("No server could describe this room."))?
            }
        };
        if !self.visible_in_hierarchy(&entry, is_member) {
            return Err(Error::not_found("No server could describe this room."));
        }
        let mut summary = entry;
        if let Some(fields) = summary.as_object_mut() {
            fields.remove("children_state");
        }
        Ok((summary, membership))
    }

    /// A room's entry from the servers its child event names; the entries
    /// of its children that answer brings are kept in `remote` for later.
    async fn remote_hierarchy(
        &self,
        room_id: &str,
        via: &[OwnedServerName],
        remote: &mut HashMap<String, JsonValue>,
    ) -> Option<JsonValue> {
        for server in via
            .iter()
            .filter(|s| self.config.federates_with(s))
            .take(MAX_VIA)
        {
            let path = format!("/_matrix/federation/v1/hierarchy/{}", urlencode(room_id));
            match self
                .federation_request(server, http::Method::GET, &path, None, 4 << 20)
                .await
            {
                Ok(answer) => {
                    if let Some(children) = answer["children"].as_array() {
                        for child in children {
                            if let Some(id) = child["room_id"].as_str() {
                                remote.insert(id.to_owned(), child.clone());
                            }
                        }
                    }
                    if answer["room"]["room_id"].as_str() == Some(room_id) {
                        return Some(answer["room"].clone());
                    }
                }
                Err(e) => tracing::info!(%server, room_id, "hierarchy request failed: {e}"),
            }
        }
        None
    }

    /// `GET /federation/v1/hierarchy/{roomId}` from `origin`: the room
    /// and its children this server has, if `origin` may see them.
    pub fn hierarchy_for_server(
        &self,
        origin: &ServerName,
        room_id: &str,
        suggested_only: bool,
    ) -> Result<JsonValue> {
        let record = self.served_room(room_id, origin)?.record;
        let may_see = |record: &RoomRecord, entry: &JsonValue| -> Result<bool> {
            let in_room = self.servers_in_room(record)?.contains(origin);
            Ok(self.visible_in_hierarchy(entry, in_room))
        };
        let entry = self
            .hierarchy_entry(room_id)?
            .ok_or_else(|| Error::not_found("This server is not in the room."))?;
        if !may_see(&record, &entry)? {
            return Err(Error::forbidden("The room is not visible to your server."));
        }
        let mut children = Vec::new();
        let mut inaccessible = Vec::new();
        for child in Self::children_of(&entry) {
            if suggested_only && !child.suggested {
                continue;
            }
            // Children this server is not in are the asker's to find.
            let (Some(child_record), Some(child_entry)) = (
                self.rooms.room(&child.room_id)?,
                self.hierarchy_entry(&child.room_id)?,
            ) else {
                continue;
            };
            if may_see(&child_record, &child_entry)? {
                children.push(child_entry);
            } else {
                inaccessible.push(child.room_id);
            }
        }
        Ok(json!({
            "room": entry,
            "children": children,
            "inaccessible_children": inaccessible,
        }))
    }
}
