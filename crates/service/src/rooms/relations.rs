//! Relations (`m.relates_to`): an index from each event to the events that
//! relate to it, and thread summaries. Both are written in the batch of
//! the relating event, so they never disagree with the timeline.
//!
//! Served events carry the thread summary of a thread root in
//! `unsigned.m.relations.m.thread`, which Element reads to show threads.

use conduit_storage::{Batch, KeyPrefix, U64};
use ruma::UserId;
use serde::{Deserialize, Serialize};
use serde_json::{Value as JsonValue, json};

use super::{pdu::Pdu, short::ShortIds};
use crate::{Error, Result, Services, tables};

/// How deep `recurse=true` follows relations of relations (the spec lets
/// the server choose; Synapse uses 3).
pub const MAX_RECURSION: usize = 3;
/// The most relations one `/relations` page returns.
const MAX_RELATIONS_PAGE: usize = 1000;
const DEFAULT_RELATIONS_PAGE: usize = 50;

/// A thread as its root shows it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ThreadSummary {
    pub count: u64,
    /// Position of the latest event in the thread.
    pub latest: u64,
    pub latest_event: u64,
    /// Who wrote in the thread (the root's sender included).
    pub participants: Vec<String>,
}

/// The relation an event declares: `(rel_type, parent event id)`.
pub fn relation_of(pdu: &Pdu) -> Option<(&str, &str)> {
    let relation = pdu.content.get("m.relates_to")?;
    Some((
        relation.get("rel_type")?.as_str()?,
        relation.get("event_id")?.as_str()?,
    ))
}

/// The index rows an appended event adds, prepared before its position is
/// known (under the room's lock, so the thread summary read stays current).
pub(crate) struct RelationRows {
    parent: u64,
    thread: Option<(u64, Option<u64>, ThreadSummary)>,
    /// The reaction key, for a reaction.
    annotation: Option<String>,
}

impl RelationRows {
    pub(crate) fn prepare(
        db: &conduit_storage::Database,
        ids: &ShortIds,
        room: u64,
        pdu: &Pdu,
    ) -> Result<Option<Self>> {
        let Some((rel_type, parent_id)) = relation_of(pdu) else {
            return Ok(None);
        };
        let Some(parent) = ids.event_short(parent_id)? else {
            return Ok(None);
        };
        // Relations across rooms mean nothing; neither do self-relations.
        let same_room = db
            .get(&tables::EVENT_META, parent)?
            .is_some_and(|meta| meta.room == room);
        if !same_room || parent == pdu.short {
            return Ok(None);
        }
        let thread = if rel_type == "m.thread" {
            let (old_latest, mut summary) = match db.get(&tables::THREADS, parent)? {
                Some(summary) => (Some(summary.latest), summary),
                None => {
                    let root = db.get(&tables::PDUS, parent)?;
                    let root_sender = root
                        .as_ref()
                        .and_then(|r| r.get("sender"))
                        .and_then(JsonValue::as_str)
                        .unwrap_or_default();
                    let summary = ThreadSummary {
                        participants: vec![root_sender.to_owned()],
                        ..ThreadSummary::default()
                    };
                    (None, summary)
                }
            };
            summary.count += 1;
            summary.latest_event = pdu.short;
            if !summary.participants.contains(&pdu.sender) {
                summary.participants.push(pdu.sender.clone());
            }
            Some((room, old_latest, summary))
        } else {
            None
        };
        let annotation = (pdu.kind == "m.reaction" && rel_type == "m.annotation")
            .then(|| {
                pdu.content["m.relates_to"]["key"]
                    .as_str()
                    .map(str::to_owned)
            })
            .flatten();
        Ok(Some(Self {
            parent,
            thread,
            annotation,
        }))
    }

    pub(crate) fn write(self, batch: &mut Batch<'_>, pdu: &Pdu, count: u64) -> Result<()> {
        batch.put(&tables::RELATIONS, (self.parent, count), pdu.short)?;
        if let Some(key) = &self.annotation {
            batch.put(
                &tables::ANNOTATIONS,
                (self.parent, pdu.sender.as_str(), key.as_str()),
                pdu.short,
            )?;
        }
        if let Some((room, old_latest, mut summary)) = self.thread {
            if let Some(old) = old_latest {
                batch.delete(&tables::THREAD_ROOTS, (room, old))?;
            }
            summary.latest = count;
            batch.put(&tables::THREAD_ROOTS, (room, count), self.parent)?;
            batch.put(&tables::THREADS, self.parent, &summary)?;
        }
        Ok(())
    }
}

/// What `/relations` asks.
pub struct RelationsRequest<'a> {
    pub room_id: &'a str,
    pub event_id: &'a str,
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub forward: bool,
    pub limit: Option<usize>,
    pub recurse: bool,
}

pub struct RelationsPage {
    pub events: Vec<JsonValue>,
    pub next: Option<u64>,
    pub recursion_depth: Option<usize>,
}

impl Services {
    /// Refuses a second identical reaction: the same sender annotating the
    /// same event with the same key (`400 M_DUPLICATE_ANNOTATION`).
    pub(crate) fn check_annotation(
        &self,
        sender: &UserId,
        kind: &str,
        content: &JsonValue,
    ) -> Result<()> {
        let relation = &content["m.relates_to"];
        if kind != "m.reaction" || relation["rel_type"] != "m.annotation" {
            return Ok(());
        }
        let (Some(parent), Some(key)) = (relation["event_id"].as_str(), relation["key"].as_str())
        else {
            return Ok(());
        };
        let Some(parent) = self.short_ids.event_short(parent)? else {
            return Ok(());
        };
        // The earlier reaction counts unless it was redacted since.
        let earlier = self
            .db
            .get(&tables::ANNOTATIONS, (parent, sender.as_str(), key))?;
        if let Some(earlier) = earlier
            && let Some(pdu) = self.rooms.pdu(earlier, &self.short_ids)?
            && relation_of(&pdu).is_some()
        {
            return Err(Error::new(
                crate::ErrorCode::DuplicateAnnotation,
                "You already reacted with this key.",
            ));
        }
        Ok(())
    }

    /// An event as a user is served it: the client format plus the bundled
    /// thread summary when it is a thread root.
    pub fn serve_event(&self, user_id: &UserId, pdu: &Pdu) -> Result<JsonValue> {
        let mut event = pdu.to_client_event();
        // The summary is left out when its latest event is hidden from the
        // user by history visibility (it would leak that event).
        if let Some(summary) = self.db.get(&tables::THREADS, pdu.short)?
            && let Some(latest) = self.rooms.pdu(summary.latest_event, &self.short_ids)?
            && let Some(room_id) = pdu.room_id.as_deref()
            && self.may_see(
                user_id,
                self.rooms.membership(user_id.as_str(), room_id)? == "join",
                &latest,
            )?
        {
            event["unsigned"]["m.relations"]["m.thread"] = json!({
                "latest_event": latest.to_client_event(),
                "count": summary.count,
                "current_user_participated": summary.participants.iter().any(|p| p == user_id.as_str()),
            });
        }
        Ok(event)
    }

    /// `GET /relations/{eventId}[/{relType}[/{eventType}]]`. Tokens are
    /// stream positions of the relating events.
    pub fn relations(
        &self,
        user_id: &UserId,
        request: &RelationsRequest<'_>,
    ) -> Result<RelationsPage> {
        let (parent, _) = self.readable_event(user_id, request.room_id, request.event_id)?;
        let parent = parent.short;
        let joined_now = self.rooms.membership(user_id.as_str(), request.room_id)? == "join";
        let limit = request
            .limit
            .unwrap_or(DEFAULT_RELATIONS_PAGE)
            .clamp(1, MAX_RELATIONS_PAGE);
        let wanted = |count: u64, pdu: &Pdu| {
            let (rel_type, _) = relation_of(pdu).unwrap_or_default();
            let after_from = request.from.is_none_or(|from| {
                if request.forward {
                    count >= from
                } else {
                    count < from
                }
            });
            let before_to = request.to.is_none_or(|to| {
                if request.forward {
                    count < to
                } else {
                    count >= to
                }
            });
            request.rel_type.is_none_or(|r| r == rel_type)
                && request.event_type.is_none_or(|t| t == pdu.kind)
                && after_from
                && before_to
        };
        // A redacted event has lost its relation.
        let readable = |pdu: &Pdu| -> Result<bool> {
            Ok(relation_of(pdu).is_some() && self.may_see(user_id, joined_now, pdu)?)
        };
        let mut found: Vec<(u64, Pdu)> = Vec::new();
        let mut reached = 1;
        if request.recurse {
            // Relations of relations: the tree down to MAX_RECURSION levels,
            // then filtered and ordered.
            let mut level = vec![parent];
            for current_depth in 1..=MAX_RECURSION {
                let mut next_level = Vec::new();
                for &event in &level {
                    let prefix = KeyPrefix::new().push::<U64>(event);
                    for row in self.db.scan_prefix(&tables::RELATIONS, &prefix)? {
                        let ((_, count), child) = row?;
                        let Some(pdu) = self.rooms.pdu(child, &self.short_ids)? else {
                            continue;
                        };
                        if readable(&pdu)? {
                            next_level.push(child);
                            found.push((count, pdu));
                            reached = current_depth;
                        }
                    }
                }
                if next_level.is_empty() {
                    break;
                }
                level = next_level;
            }
            found.retain(|(count, pdu)| wanted(*count, pdu));
        } else {
            // Direct relations are stored in position order: read from the
            // token in the asked direction and stop one past a full page.
            let prefix = KeyPrefix::new().push::<U64>(parent);
            let from = request
                .from
                .unwrap_or(if request.forward { 0 } else { u64::MAX });
            let start = KeyPrefix::new().push::<U64>(parent).push::<U64>(from);
            for row in self.db.scan_from(
                &tables::RELATIONS,
                &prefix,
                start.as_bytes(),
                request.forward,
            )? {
                let ((_, count), child) = row?;
                let past_to = request.to.is_some_and(|to| {
                    if request.forward {
                        count >= to
                    } else {
                        count < to
                    }
                });
                if past_to {
                    break;
                }
                let Some(pdu) = self.rooms.pdu(child, &self.short_ids)? else {
                    continue;
                };
                if wanted(count, &pdu) && readable(&pdu)? {
                    found.push((count, pdu));
                    if found.len() > limit {
                        break;
                    }
                }
            }
        }
        found.sort_by_key(|(count, _)| *count);
        if !request.forward {
            found.reverse();
        }
        let next = (found.len() > limit).then(|| {
            let (count, _) = &found[limit - 1];
            if request.forward { count + 1 } else { *count }
        });
        found.truncate(limit);
        let events = found
            .iter()
            .map(|(_, pdu)| self.serve_event(user_id, pdu))
            .collect::<Result<_>>()?;
        Ok(RelationsPage {
            events,
            next,
            recursion_depth: request.recurse.then_some(reached),
        })
    }

    /// `GET /threads`: thread roots, latest activity first. `from` is the
    /// position of a thread's latest event; `participated` keeps threads
    /// the user wrote in (or started).
    pub fn threads(
        &self,
        user_id: &UserId,
        room_id: &str,
        from: Option<u64>,
        limit: usize,
        participated: bool,
    ) -> Result<(Vec<JsonValue>, Option<u64>)> {
        let room = self.require_may_read(user_id, room_id)?;
        let joined_now = self.rooms.membership(user_id.as_str(), room_id)? == "join";
        let limit = limit.clamp(1, MAX_RELATIONS_PAGE);
        let prefix = KeyPrefix::new().push::<U64>(room.short);
        let start = KeyPrefix::new()
            .push::<U64>(room.short)
            .push::<U64>(from.unwrap_or(u64::MAX));
        let mut roots = Vec::new();
        let mut next = None;
        for row in self
            .db
            .scan_from(&tables::THREAD_ROOTS, &prefix, start.as_bytes(), false)?
        {
            let ((_, latest), root) = row?;
            if roots.len() == limit {
                next = Some(latest + 1);
                break;
            }
            if participated {
                let summary = self.db.get(&tables::THREADS, root)?.unwrap_or_default();
                if !summary.participants.iter().any(|p| p == user_id.as_str()) {
                    continue;
                }
            }
            if let Some(pdu) = self.rooms.pdu(root, &self.short_ids)?
                && self.may_see(user_id, joined_now, &pdu)?
            {
                roots.push(self.serve_event(user_id, &pdu)?);
            }
        }
        Ok((roots, next))
    }
}
