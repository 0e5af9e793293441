//! Simplified sliding sync (MSC4186), as Element X and matrix-rust-sdk
//! speak it on `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`
//! (Synapse's shape of it: `pos` and `timeout` in the query, `ranges`,
//! `required_state` as pairs with `$LAZY` and `$ME`).
//!
//! A request names lists of the user's rooms (filtered, sorted by recency,
//! cut to ranges) and rooms it subscribes to, each with a timeline length
//! and the state it wants, and extensions (to-device, E2EE, account data,
//! receipts, typing). Nothing of a request is remembered: the connection
//! (see [`connections`]) remembers what each room was sent, so a room comes
//! again only with what changed, and the work grows with what changed.

mod connections;
mod extensions;
mod lists;
mod required_state;
mod room;

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use ruma::{DeviceId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value as JsonValue, json};

pub use connections::Connections;
use connections::{ConnState, UnknownPos};
use required_state::RequiredState;

use crate::{Error, ErrorCode, Result, Services};

/// The longest timeline a room may ask for.
pub const MAX_TIMELINE_LIMIT: usize = 1000;
/// Lists and room subscriptions one request may have.
pub const MAX_LISTS: usize = 100;
const MAX_LIST_NAME: usize = 64;
pub const MAX_SUBSCRIPTIONS: usize = 100;

/// A request body.
#[derive(Debug, Default, Deserialize)]
pub struct SlidingSyncBody {
    #[serde(default)]
    pub conn_id: Option<String>,
    #[serde(default)]
    pub lists: BTreeMap<String, ListConfig>,
    #[serde(default)]
    pub room_subscriptions: BTreeMap<String, RoomConfig>,
    /// MSC3575's way to end a subscription; here every request names its
    /// subscriptions anyway, so these are only taken out of this one.
    #[serde(default)]
    pub unsubscribe_rooms: Vec<String>,
    #[serde(default)]
    pub extensions: extensions::ExtensionsRequest,
}

/// What a list or a subscription shows of each room.
#[derive(Clone, Debug, Deserialize)]
pub struct RoomConfig {
    pub timeline_limit: usize,
    pub required_state: Vec<(String, String)>,
}

#[derive(Debug, Deserialize)]
pub struct ListConfig {
    #[serde(flatten)]
    pub room: RoomConfig,
    /// Inclusive `[start, end]` ranges of the sorted list; none: only the
    /// count.
    #[serde(default)]
    pub ranges: Vec<(u64, u64)>,
    #[serde(default)]
    pub filters: Option<lists::Filters>,
}

/// One request as the handler hands it over.
pub struct SlidingSyncRequest<'a> {
    pub device_id: &'a DeviceId,
    pub pos: Option<&'a str>,
    pub timeout: Duration,
    pub body: SlidingSyncBody,
}

/// What a room is shown with, all its lists and its subscription combined.
#[derive(Clone, Debug)]
struct RoomWants {
    timeline_limit: usize,
    required_state: RequiredState,
}

/// The stretch of the stream an answer covers: from the connection's
/// position (`None` on its first request) to `next`.
#[derive(Clone, Copy, Debug)]
struct Span {
    since: Option<u64>,
    next: u64,
}

/// One computed answer and what it would store.
struct Answer {
    response: JsonValue,
    state: ConnState,
    /// Whether it carries anything new (else a long-poll waits).
    changed: bool,
    /// Rooms whose changes would change the answer: what a waiting
    /// long-poll watches.
    watched: Vec<u64>,
}

impl SlidingSyncBody {
    /// Checks the limits the parser does not: sizes and ranges.
    pub fn check(&self) -> Result<()> {
        if self.lists.len() > MAX_LISTS {
            return Err(Error::invalid_param(format!(
                "At most {MAX_LISTS} lists per request."
            )));
        }
        if self.room_subscriptions.len() > MAX_SUBSCRIPTIONS {
            return Err(Error::invalid_param(format!(
                "At most {MAX_SUBSCRIPTIONS} room subscriptions per request."
            )));
        }
        for (name, list) in &self.lists {
            if name.len() > MAX_LIST_NAME {
                return Err(Error::invalid_param(format!(
                    "List names are at most {MAX_LIST_NAME} bytes."
                )));
            }
            if let Some(&(start, end)) = list.ranges.iter().find(|(start, end)| start > end) {
                return Err(Error::invalid_param(format!(
                    "List {name:?}: range [{start}, {end}] ends before it starts."
                )));
            }
        }
        let configs = self
            .lists
            .values()
            .map(|l| &l.room)
            .chain(self.room_subscriptions.values());
        for config in configs {
            if config.timeline_limit > MAX_TIMELINE_LIMIT {
                return Err(Error::invalid_param(format!(
                    "timeline_limit is at most {MAX_TIMELINE_LIMIT}."
                )));
            }
        }
        Ok(())
    }
}

impl Services {
    /// Answers a sliding sync request: at once when something is new (or
    /// on a connection's first request), else when something changes or
    /// the timeout passes.
    pub async fn sliding_sync(
        &self,
        user_id: &UserId,
        request: SlidingSyncRequest<'_>,
    ) -> Result<JsonValue> {
        request.body.check()?;
        let conn_id = request.body.conn_id.as_deref().unwrap_or("");
        let (user, device) = (user_id.as_str(), request.device_id.as_str());
        let base = self
            .sliding_sync_connections
            .start(user, device, conn_id, request.pos)
            .map_err(|UnknownPos| {
                Error::new(
                    ErrorCode::UnknownPos,
                    "Unknown position: start the connection over.",
                )
            })?;
        let mut positions = self.stream.subscribe();
        let deadline = tokio::time::Instant::now() + request.timeout;
        let mut next = self.stream.position();
        let answer = loop {
            let answer = self.sliding_sync_once(user_id, &request, &base, next)?;
            if request.pos.is_none() || answer.changed {
                break answer;
            }
            // Nothing new: wait for a change that may concern the user.
            let looked_up_to = next;
            let mut timed_out = false;
            loop {
                let wait = tokio::time::timeout_at(deadline, positions.changed()).await;
                next = self.stream.position();
                if !matches!(wait, Ok(Ok(()))) {
                    timed_out = true;
                    break;
                }
                if self.stream.may_concern(user, &answer.watched, looked_up_to) {
                    break;
                }
            }
            if timed_out {
                break self.sliding_sync_once(user_id, &request, &base, next)?;
            }
        };
        let Answer {
            mut response,
            state,
            ..
        } = answer;
        let pos = self
            .sliding_sync_connections
            .finish(user, device, conn_id, request.pos, state);
        response["pos"] = pos.into();
        Ok(response)
    }

    /// One look at what the connection's client has not seen, as of the
    /// stream position `next`.
    fn sliding_sync_once(
        &self,
        user_id: &UserId,
        request: &SlidingSyncRequest<'_>,
        base: &ConnState,
        next: u64,
    ) -> Result<Answer> {
        let body = &request.body;
        let since = request.pos.map(|_| base.stream);
        let span = Span { since, next };
        let candidates = self.sliding_sync_candidates(user_id, base, since)?;
        let direct = self.direct_rooms(user_id)?;
        let by_id: HashMap<&str, &lists::Candidate> =
            candidates.iter().map(|c| (c.room_id.as_str(), c)).collect();

        // Lists: each filtered, sorted and cut to its ranges.
        let mut lists_out = Map::new();
        let mut wants: HashMap<String, RoomWants> = HashMap::new();
        // Room id -> the lists it is shown in (extension scopes).
        let mut in_lists: HashMap<String, Vec<&str>> = HashMap::new();
        let want = |wants: &mut HashMap<String, RoomWants>, room: &str, config: &RoomConfig| {
            let required = RequiredState::from_pairs(&config.required_state, user_id.as_str());
            match wants.get_mut(room) {
                Some(w) => {
                    w.timeline_limit = w.timeline_limit.max(config.timeline_limit);
                    w.required_state.merge(&required);
                }
                None => {
                    wants.insert(
                        room.to_owned(),
                        RoomWants {
                            timeline_limit: config.timeline_limit,
                            required_state: required,
                        },
                    );
                }
            }
        };
        for (name, list) in &body.lists {
            let sorted = self.list_rooms(user_id, &candidates, list.filters.as_ref(), &direct)?;
            lists_out.insert(name.clone(), json!({ "count": sorted.len() }));
            for &(start, end) in &list.ranges {
                let start = usize::try_from(start).unwrap_or(usize::MAX);
                let end = usize::try_from(end).unwrap_or(usize::MAX);
                let length = end.saturating_sub(start).saturating_add(1);
                for &index in sorted.iter().skip(start).take(length) {
                    let room_id = &candidates[index].room_id;
                    want(&mut wants, room_id, &list.room);
                    in_lists.entry(room_id.clone()).or_default().push(name);
                }
            }
        }
        // Subscriptions: any room the user has a membership in.
        for (room_id, config) in &body.room_subscriptions {
            if body.unsubscribe_rooms.contains(room_id) {
                continue;
            }
            if by_id.contains_key(room_id.as_str())
                || self.rooms.has_membership(user_id.as_str(), room_id)?
            {
                want(&mut wants, room_id, config);
            }
        }

        // Rooms: what each one's client has not seen.
        let mut state = ConnState {
            stream: next,
            rooms: base.rooms.clone(),
            extension_rooms: base.extension_rooms.clone(),
        };
        let mut rooms_out = Map::new();
        // Any of the user's rooms may move into a range: a long-poll
        // watches them all (a lookup in memory each).
        let mut watched: Vec<u64> = candidates
            .iter()
            .filter_map(|c| c.record.as_ref().map(|r| r.short))
            .collect();
        for (room_id, room_wants) in &wants {
            let candidate = match by_id.get(room_id.as_str()) {
                Some(&candidate) => candidate.clone(),
                None => match self.subscription_candidate(user_id, room_id)? {
                    Some(candidate) => candidate,
                    None => continue,
                },
            };
            if let Some(record) = &candidate.record
                && !by_id.contains_key(room_id.as_str())
            {
                watched.push(record.short);
            }
            let previous = base.rooms.get(room_id);
            let shown = self.sliding_room(
                user_id,
                &candidate,
                room_wants,
                previous,
                span,
                direct.contains(room_id),
            )?;
            if let Some((json, sent)) = shown {
                if let Some(json) = json {
                    rooms_out.insert(room_id.clone(), json);
                }
                state.rooms.insert(room_id.clone(), sent);
            }
        }

        let scope = extensions::Scope {
            wanted: &wants,
            in_lists: &in_lists,
            candidates: &candidates,
        };
        let extensions_out = self.sliding_extensions(
            user_id,
            request.device_id,
            &body.extensions,
            &scope,
            span,
            &mut state,
        )?;
        let changed = !rooms_out.is_empty() || extensions::has_news(&extensions_out);
        let mut response = json!({
            "rooms": rooms_out,
            "extensions": extensions_out,
        });
        if !body.lists.is_empty() {
            response["lists"] = lists_out.into();
        }
        Ok(Answer {
            response,
            state,
            changed,
            watched,
        })
    }

    /// The rooms the user's `m.direct` account data names.
    fn direct_rooms(&self, user_id: &UserId) -> Result<std::collections::HashSet<String>> {
        let direct = self.account_data.get(user_id, None, "m.direct")?;
        Ok(direct
            .as_ref()
            .and_then(JsonValue::as_object)
            .into_iter()
            .flat_map(|users| users.values())
            .filter_map(JsonValue::as_array)
            .flatten()
            .filter_map(JsonValue::as_str)
            .map(str::to_owned)
            .collect())
    }
}
