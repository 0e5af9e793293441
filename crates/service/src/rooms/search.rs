//! Server-side search of room events (`POST /search`) over a word index
//! written with each event, and the user directory.
//!
//! The index holds, per room, the lower-cased words of each message's
//! `body`, and of room names and topics. A search term's words match as
//! prefixes (`gard` finds "gardening"); an event matches when all of them
//! do, checked again against its current content (a redaction empties it).

use std::collections::{BTreeMap, HashSet};

use conduit_storage::{Batch, KeyPrefix, U64};
use ruma::UserId;
use serde_json::Value as JsonValue;

use super::{membership::membership_of, pdu::Pdu};
use crate::{Error, Result, Services, tables};

/// Longest word indexed, in bytes; longer ones are cut (on a char boundary).
const MAX_WORD: usize = 64;
/// Most results of one search page.
const MAX_SEARCH_PAGE: usize = 100;
/// Most users one directory search returns.
const MAX_DIRECTORY_RESULTS: usize = 100;

/// The searchable text of an event, by search key.
fn searchable(pdu: &Pdu) -> Option<(&'static str, &str)> {
    let (key, field) = match pdu.kind.as_str() {
        "m.room.message" => ("content.body", "body"),
        "m.room.name" => ("content.name", "name"),
        "m.room.topic" => ("content.topic", "topic"),
        _ => return None,
    };
    Some((key, pdu.content.get(field)?.as_str()?))
}

/// Lower-cased words of a text, deduplicated.
pub fn words(text: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut word = w.to_lowercase();
            if word.len() > MAX_WORD {
                let mut end = MAX_WORD;
                while !word.is_char_boundary(end) {
                    end -= 1;
                }
                word.truncate(end);
            }
            word
        })
        .filter(|w| seen.insert(w.clone()))
        .collect()
}

/// The index rows of an event, written in its append batch.
pub(crate) fn index_rows(pdu: &Pdu) -> Vec<String> {
    searchable(pdu)
        .map(|(_, text)| words(text))
        .unwrap_or_default()
}

pub(crate) fn write_index(
    batch: &mut Batch<'_>,
    room: u64,
    count: u64,
    pdu: &Pdu,
    words: &[String],
) -> Result<()> {
    for word in words {
        batch.put(
            &tables::SEARCH_INDEX,
            (room, word.as_str(), count),
            pdu.short,
        )?;
    }
    Ok(())
}

/// What `/search` asks of room events.
pub struct SearchQuery {
    pub term: String,
    /// Search keys (`content.body`, `content.name`, `content.topic`);
    /// empty for all.
    pub keys: Vec<String>,
    pub rooms: Option<Vec<String>>,
    /// The event fields of the search filter (types, senders).
    pub filter: super::messages::EventFilter,
    /// Only results older than this position (the `next_batch`).
    pub before: Option<u64>,
    pub limit: usize,
}

pub struct SearchPage {
    pub results: Vec<(String, Pdu)>,
    /// How many events match in all.
    pub count: usize,
    pub next: Option<u64>,
    pub highlights: Vec<String>,
}

/// A user found in the directory.
pub struct DirectoryUser {
    pub user_id: String,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
}

impl Services {
    /// `POST /search` for room events, newest first, in the user's joined
    /// rooms (or the listed ones among them).
    pub fn search_events(&self, user_id: &UserId, query: &SearchQuery) -> Result<SearchPage> {
        let terms = words(&query.term);
        if terms.is_empty() {
            return Err(Error::bad_json("search_term has no words."));
        }
        let limit = query.limit.clamp(1, MAX_SEARCH_PAGE);
        let before = query.before.unwrap_or(u64::MAX);
        // Candidates of the first word, position -> (room, event), newest first.
        let mut candidates: BTreeMap<u64, (String, u64)> = BTreeMap::new();
        for room_id in self.rooms.joined_rooms(user_id.as_str())? {
            if query.rooms.as_ref().is_some_and(|r| !r.contains(&room_id)) {
                continue;
            }
            let Some(room) = self.rooms.room(&room_id)? else {
                continue;
            };
            // The word is a prefix of indexed words: scan from the bare
            // bytes (no separator after it), stop at the first that differs.
            let room_prefix = KeyPrefix::new().push::<U64>(room.short);
            let mut start = room_prefix.as_bytes().to_vec();
            start.extend_from_slice(terms[0].as_bytes());
            for row in self
                .db
                .scan_from(&tables::SEARCH_INDEX, &room_prefix, &start, true)?
            {
                let ((_, word, count), event) = row?;
                if !word.starts_with(terms[0].as_str()) {
                    break;
                }
                if count < before {
                    candidates.insert(count, (room_id.clone(), event));
                }
            }
        }
        let mut results = Vec::new();
        let mut count = 0;
        let mut last_position = 0;
        for (&position, (room_id, event)) in candidates.iter().rev() {
            let Some(pdu) = self.rooms.pdu(*event, &self.short_ids)? else {
                continue;
            };
            let Some((key, text)) = searchable(&pdu) else {
                continue;
            };
            if !query.keys.is_empty() && !query.keys.iter().any(|k| k == key) {
                continue;
            }
            let text_words = words(text);
            let all_match = terms
                .iter()
                .all(|term| text_words.iter().any(|w| w.starts_with(term.as_str())));
            if !all_match || !query.filter.keeps(&pdu) || !self.may_see(user_id, true, &pdu)? {
                continue;
            }
            count += 1;
            if results.len() < limit {
                results.push((room_id.clone(), pdu));
                last_position = position;
            }
        }
        // The next page holds what is older than this page's last result.
        let next = (count > results.len()).then_some(last_position);
        Ok(SearchPage {
            results,
            count,
            next,
            highlights: terms,
        })
    }

    /// `POST /user_directory/search`: local users who share a room with
    /// the searcher or are in a published room, matching the term in their
    /// user id or display name. Whether more matched goes in `.1`.
    pub fn search_users(
        &self,
        user_id: &UserId,
        term: &str,
        limit: usize,
    ) -> Result<(Vec<DirectoryUser>, bool)> {
        let term = term.to_lowercase();
        let limit = limit.clamp(1, MAX_DIRECTORY_RESULTS);
        let mut rooms = self.rooms.joined_rooms(user_id.as_str())?;
        rooms.extend(self.published_room_ids()?);
        rooms.sort();
        rooms.dedup();
        let mut found: BTreeMap<String, DirectoryUser> = BTreeMap::new();
        for room_id in rooms {
            for member in self.members(&room_id)? {
                if membership_of(&member) != "join" {
                    continue;
                }
                let Some(id) = member.state_key.as_deref() else {
                    continue;
                };
                if found.contains_key(id) {
                    continue;
                }
                let text = |field: &str| {
                    member
                        .content
                        .get(field)
                        .and_then(JsonValue::as_str)
                        .map(str::to_owned)
                };
                let display_name = text("displayname");
                let matches = id.to_lowercase().contains(&term)
                    || display_name
                        .as_deref()
                        .is_some_and(|n| n.to_lowercase().contains(&term));
                if matches {
                    found.insert(
                        id.to_owned(),
                        DirectoryUser {
                            user_id: id.to_owned(),
                            display_name,
                            avatar_url: text("avatar_url"),
                        },
                    );
                }
            }
        }
        let limited = found.len() > limit;
        Ok((found.into_values().take(limit).collect(), limited))
    }
}
