//! Which rooms a sliding sync list holds and in what order: the user's
//! rooms (joined, invited, knocked, banned, kicked from, and left since the
//! connection last showed them), through the list's filters, newest first
//! by bump stamp.

use std::collections::HashSet;

use ruma::UserId;
use serde::Deserialize;
use serde_json::Value as JsonValue;

use super::connections::ConnState;
use crate::{
    Result, Services,
    rooms::timeline::{BUMP_TYPES, Recency, RoomRecord},
};

/// Rows a room's timeline is read back for its last bumping event when
/// memory does not know it (once per room and process).
const BUMP_SCAN: usize = 200;

/// A list's filters; every one given must hold.
#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    pub is_dm: Option<bool>,
    pub is_encrypted: Option<bool>,
    pub is_invite: Option<bool>,
    /// Room types kept (`null`: rooms without a type).
    pub room_types: Option<Vec<Option<String>>>,
    #[serde(default)]
    pub not_room_types: Vec<Option<String>>,
    /// Only children (`m.space.child`) of these spaces.
    pub spaces: Option<Vec<String>>,
    /// Only rooms whose name holds this, ignoring case.
    pub room_name_like: Option<String>,
    /// Only rooms with one of these tags.
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub not_tags: Vec<String>,
}

/// A room that may be in the user's lists.
#[derive(Clone, Debug)]
pub(super) struct Candidate {
    pub room_id: String,
    /// `None` for a room of another server the user is invited to (or
    /// knocked on, or rejected the invite to).
    pub record: Option<RoomRecord>,
    pub membership: String,
    /// The sort key and `bump_stamp`: the last bumping event of a joined
    /// room, the membership's position otherwise.
    pub stamp: u64,
    /// Where the user's membership event is (`None` when joined: not read).
    pub membership_at: Option<u64>,
}

impl Services {
    /// The user's rooms a list may hold. `since` is the connection's
    /// position (`None` on its first request).
    pub(super) fn sliding_sync_candidates(
        &self,
        user_id: &UserId,
        base: &ConnState,
        since: Option<u64>,
    ) -> Result<Vec<Candidate>> {
        let mut candidates = Vec::new();
        for (room_id, membership) in self.rooms.user_rooms(user_id.as_str())? {
            if let Some(candidate) = self.candidate(user_id, room_id, membership, base, since)? {
                candidates.push(candidate);
            }
        }
        Ok(candidates)
    }

    /// A room a client subscribes to outside its lists: any room the user
    /// has a membership in, a self-left one included.
    pub(super) fn subscription_candidate(
        &self,
        user_id: &UserId,
        room_id: &str,
    ) -> Result<Option<Candidate>> {
        let membership = self.rooms.membership(user_id.as_str(), room_id)?;
        let Some(record) = self.rooms.room(room_id)? else {
            return Ok(None);
        };
        let Some(member) = self.own_member_event(user_id, &record)? else {
            return Ok(None);
        };
        let at = self.count_of(&member)?;
        let stamp = match membership.as_str() {
            "join" => self.bump_stamp(&record)?,
            _ => at,
        };
        Ok(Some(Candidate {
            room_id: room_id.to_owned(),
            record: Some(record),
            membership,
            stamp,
            membership_at: Some(at),
        }))
    }

    fn candidate(
        &self,
        user_id: &UserId,
        room_id: String,
        membership: String,
        base: &ConnState,
        since: Option<u64>,
    ) -> Result<Option<Candidate>> {
        let Some(record) = self.rooms.room(&room_id)? else {
            let Some(remote) = self.remote_invite(user_id, &room_id)? else {
                return Ok(None);
            };
            let shown = match membership.as_str() {
                "invite" | "knock" => true,
                // A rejected invite, once, to the connection that showed it.
                _ => {
                    since.is_some()
                        && base
                            .rooms
                            .get(&room_id)
                            .is_some_and(|sent| sent.through <= remote.position)
                }
            };
            return Ok(shown.then_some(Candidate {
                room_id,
                record: None,
                membership,
                stamp: remote.position,
                membership_at: Some(remote.position),
            }));
        };
        if membership == "join" {
            let stamp = self.bump_stamp(&record)?;
            return Ok(Some(Candidate {
                room_id,
                record: Some(record),
                membership,
                stamp,
                membership_at: None,
            }));
        }
        let Some(member) = self.own_member_event(user_id, &record)? else {
            return Ok(None);
        };
        let at = self.count_of(&member)?;
        // Leaving by oneself hides the room, except from a connection that
        // showed it before the leave (which must learn of it once); a kick
        // or a ban stays in the list.
        if membership == "leave"
            && member.sender == user_id.as_str()
            && base
                .rooms
                .get(&room_id)
                .is_none_or(|sent| sent.through > at)
        {
            return Ok(None);
        }
        Ok(Some(Candidate {
            room_id,
            record: Some(record),
            membership,
            stamp: at,
            membership_at: Some(at),
        }))
    }

    /// A joined room's `bump_stamp`: the position of its last event of a
    /// bumping type ([`BUMP_TYPES`]). Kept in memory; read back from the
    /// timeline the first time a room is asked for.
    pub(super) fn bump_stamp(&self, room: &RoomRecord) -> Result<u64> {
        if let Some(Recency {
            bump: Some(bump), ..
        }) = self.rooms.known_recency(room.short)
        {
            return Ok(bump);
        }
        let rows = self.rooms.page(room.short, u64::MAX, false, BUMP_SCAN)?;
        let mut bump = None;
        for &(count, short) in &rows {
            if let Some(pdu) = self.rooms.pdu(short, &self.short_ids)?
                && BUMP_TYPES.contains(&pdu.kind.as_str())
            {
                bump = Some(count);
                break;
            }
        }
        // A room of state changes only sorts by the oldest event looked at
        // (its creation, when the whole timeline was).
        let bump = bump
            .or_else(|| rows.last().map(|(count, _)| *count))
            .unwrap_or(0);
        let latest = rows.first().map_or(0, |(count, _)| *count);
        self.rooms.note_recency(
            room.short,
            Recency {
                latest,
                bump: Some(bump),
            },
        );
        Ok(bump)
    }

    /// The candidates a list holds, as indices into `candidates`, newest
    /// first.
    pub(super) fn list_rooms(
        &self,
        user_id: &UserId,
        candidates: &[Candidate],
        filters: Option<&Filters>,
        direct: &HashSet<String>,
    ) -> Result<Vec<usize>> {
        let space_children = match filters.and_then(|f| f.spaces.as_ref()) {
            Some(spaces) => Some(self.space_children(spaces)?),
            None => None,
        };
        let mut kept = Vec::with_capacity(candidates.len());
        for (index, candidate) in candidates.iter().enumerate() {
            let keep = match filters {
                None => true,
                Some(filters) => {
                    self.passes(user_id, candidate, filters, direct, space_children.as_ref())?
                }
            };
            if keep {
                kept.push(index);
            }
        }
        kept.sort_by(|&a, &b| {
            let (a, b) = (&candidates[a], &candidates[b]);
            b.stamp
                .cmp(&a.stamp)
                .then_with(|| a.room_id.cmp(&b.room_id))
        });
        Ok(kept)
    }

    fn passes(
        &self,
        user_id: &UserId,
        candidate: &Candidate,
        filters: &Filters,
        direct: &HashSet<String>,
        space_children: Option<&HashSet<String>>,
    ) -> Result<bool> {
        if filters
            .is_dm
            .is_some_and(|dm| dm != direct.contains(&candidate.room_id))
            || filters
                .is_invite
                .is_some_and(|invite| invite != (candidate.membership == "invite"))
            || space_children.is_some_and(|children| !children.contains(&candidate.room_id))
        {
            return Ok(false);
        }
        let needs_state = filters.is_encrypted.is_some()
            || filters.room_types.is_some()
            || !filters.not_room_types.is_empty()
            || filters.room_name_like.is_some();
        if needs_state {
            let facts = self.room_facts(user_id, candidate)?;
            if filters
                .is_encrypted
                .is_some_and(|encrypted| encrypted != facts.encrypted)
                || filters
                    .room_types
                    .as_ref()
                    .is_some_and(|types| !types.contains(&facts.room_type))
                || filters.not_room_types.contains(&facts.room_type)
            {
                return Ok(false);
            }
            if let Some(like) = &filters.room_name_like {
                let like = like.to_lowercase();
                if !facts
                    .name
                    .is_some_and(|name| name.to_lowercase().contains(&like))
                {
                    return Ok(false);
                }
            }
        }
        if filters.tags.is_some() || !filters.not_tags.is_empty() {
            let tags = self.room_tags(user_id, &candidate.room_id)?;
            if filters
                .tags
                .as_ref()
                .is_some_and(|wanted| !wanted.iter().any(|t| tags.contains(t)))
                || filters.not_tags.iter().any(|t| tags.contains(t))
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// What filters read of a room's state: from its current state, or
    /// from the stripped state of an invite from another server.
    fn room_facts(&self, user_id: &UserId, candidate: &Candidate) -> Result<RoomFacts> {
        let Some(record) = &candidate.record else {
            let invite_state = self
                .remote_invite(user_id, &candidate.room_id)?
                .map(|r| r.invite_state)
                .unwrap_or_default();
            let content = |kind: &str| {
                invite_state
                    .iter()
                    .find(|e| e.get("type").and_then(JsonValue::as_str) == Some(kind))
                    .and_then(|e| e.get("content"))
                    .cloned()
            };
            return Ok(RoomFacts {
                encrypted: content("m.room.encryption").is_some(),
                room_type: content("m.room.create")
                    .and_then(|c| c.get("type").and_then(JsonValue::as_str).map(str::to_owned)),
                name: content("m.room.name")
                    .and_then(|c| c.get("name").and_then(JsonValue::as_str).map(str::to_owned)),
            });
        };
        let state = self.current_state(record)?;
        Ok(RoomFacts {
            encrypted: self.state_event(&state, "m.room.encryption", "")?.is_some(),
            room_type: self.state_text(&state, "m.room.create", "type")?,
            name: self.room_name(&state)?,
        })
    }

    /// The tags the user put on a room (`m.tag`).
    fn room_tags(&self, user_id: &UserId, room_id: &str) -> Result<Vec<String>> {
        let Ok(room) = ruma::RoomId::parse(room_id) else {
            return Ok(Vec::new());
        };
        let tags = self.account_data.get(user_id, Some(&room), "m.tag")?;
        Ok(tags
            .as_ref()
            .and_then(|t| t.get("tags"))
            .and_then(JsonValue::as_object)
            .map(|tags| tags.keys().cloned().collect())
            .unwrap_or_default())
    }

    /// The rooms the given spaces name as children (`m.space.child` with
    /// a `via`), as far as this server has the spaces.
    fn space_children(&self, spaces: &[String]) -> Result<HashSet<String>> {
        let mut children = HashSet::new();
        for space in spaces {
            let Some(record) = self.rooms.room(space)? else {
                continue;
            };
            let state = self.current_state(&record)?;
            children.extend(
                self.space_child_events(&state)?
                    .into_iter()
                    .filter_map(|pdu| pdu.state_key.clone()),
            );
        }
        Ok(children)
    }
}

/// What the state-reading filters look at.
struct RoomFacts {
    encrypted: bool,
    room_type: Option<String>,
    name: Option<String>,
}
