//! Paginating a room's timeline (`GET /messages`). A token is a position
//! in the server-wide event order: going back from `T` returns events
//! before `T`; going forward returns events from `T` on.

use ruma::UserId;

use super::pdu::Pdu;
use crate::{Error, Result, Services};

/// The most events one page returns, whatever the client asks.
pub const MAX_PAGE: usize = 1000;
/// The most timeline rows one page reads looking for events that pass.
const MAX_SCANNED: usize = 5000;

/// One page of a room's timeline.
pub struct Page {
    pub events: Vec<Pdu>,
    pub start: u64,
    /// Where the next page starts; `None` at either end of the timeline.
    pub end: Option<u64>,
}

/// What a client asks of `/messages`.
pub struct PageRequest<'a> {
    pub room_id: &'a str,
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub forward: bool,
    pub limit: usize,
    pub filter: EventFilter,
}

/// Which events a page keeps (the event fields of a room event filter).
#[derive(Clone, Default)]
pub struct EventFilter {
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
}

/// A type pattern: exact, or a prefix ending in `*`.
fn matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

impl From<&ruma::api::client::filter::RoomEventFilter> for EventFilter {
    fn from(filter: &ruma::api::client::filter::RoomEventFilter) -> Self {
        let users = |list: &[ruma::OwnedUserId]| list.iter().map(ToString::to_string).collect();
        Self {
            types: filter.types.clone(),
            not_types: filter.not_types.clone(),
            senders: filter.senders.as_deref().map(users),
            not_senders: users(&filter.not_senders),
        }
    }
}

impl EventFilter {
    /// Whether an event passes the filter.
    pub fn keeps(&self, pdu: &Pdu) -> bool {
        let kind_ok = self
            .types
            .as_ref()
            .is_none_or(|t| t.iter().any(|p| matches(p, &pdu.kind)))
            && !self.not_types.iter().any(|p| matches(p, &pdu.kind));
        let sender_ok = self
            .senders
            .as_ref()
            .is_none_or(|s| s.contains(&pdu.sender))
            && !self.not_senders.contains(&pdu.sender);
        kind_ok && sender_ok
    }
}

impl Services {
    /// A page of the timeline, as far as history visibility lets the user
    /// read it (former members see up to their leave).
    pub fn messages(&self, user_id: &UserId, request: &PageRequest<'_>) -> Result<Page> {
        let PageRequest {
            room_id,
            from,
            to,
            forward,
            limit,
            ref filter,
        } = *request;
        let room = self.require_may_read(user_id, room_id)?;
        let joined_now = self.rooms.membership(user_id.as_str(), room_id)? == "join";
        let start = from.unwrap_or(if forward { 0 } else { u64::MAX });
        let limit = limit.clamp(1, MAX_PAGE);
        let mut events = Vec::with_capacity(limit);
        let mut cursor = start;
        let mut exhausted = false;
        // Filtered-out events do not count towards the limit: read on until
        // the page is full or the timeline (or `to`) ends, but never more
        // than `MAX_SCANNED` rows per request: a filter matching nothing
        // (or history hidden from a former member) then gets a short page
        // with an `end` to carry on from.
        let mut scanned = 0;
        'pages: loop {
            if scanned >= MAX_SCANNED {
                break;
            }
            scanned += limit;
            let rows = self.rooms.page(room.short, cursor, forward, limit)?;
            let last_rows = rows.len() < limit;
            for (count, short) in rows {
                let past_to = to.is_some_and(|to| if forward { count >= to } else { count < to });
                if past_to {
                    exhausted = true;
                    break 'pages;
                }
                cursor = if forward { count + 1 } else { count };
                if let Some(pdu) = self.rooms.pdu(short, &self.short_ids)?
                    && filter.keeps(&pdu)
                    && self.may_see(user_id, joined_now, &pdu)?
                {
                    events.push(pdu);
                    if events.len() == limit {
                        break 'pages;
                    }
                }
            }
            if last_rows {
                exhausted = true;
                break;
            }
        }
        Ok(Page {
            events,
            start,
            end: (!exhausted).then_some(cursor),
        })
    }
}

/// `GET /context/{eventId}`: an event, the events around it, and the room
/// state at the end of the returned window.
pub struct Context {
    pub before: Vec<Pdu>,
    pub event: Pdu,
    pub after: Vec<Pdu>,
    pub state: Vec<Pdu>,
    /// Token to paginate back from the first event before.
    pub start: u64,
    /// Token to paginate forward from the last event after.
    pub end: u64,
}

impl Services {
    /// An event of a room the user may read, with its metadata; `404` for
    /// events of other rooms and events history visibility hides, so that
    /// event ids cannot be probed.
    pub fn readable_event(
        &self,
        user_id: &UserId,
        room_id: &str,
        event_id: &str,
    ) -> Result<(Pdu, super::timeline::EventMeta)> {
        let room = self.require_may_read(user_id, room_id)?;
        let not_found = || Error::not_found("Event not found.");
        let event = self
            .rooms
            .pdu_by_id(event_id, &self.short_ids)?
            .ok_or_else(not_found)?;
        let meta = self.rooms.meta(event.short)?.ok_or_else(not_found)?;
        let joined_now = self.rooms.membership(user_id.as_str(), room_id)? == "join";
        if meta.room != room.short || !self.may_see(user_id, joined_now, &event)? {
            return Err(not_found());
        }
        Ok((event, meta))
    }

    /// The context of an event for a member: up to `limit` events
    /// split around it (half before), and the state after the last one —
    /// only the senders' member events with `lazy_members`.
    pub fn context(
        &self,
        user_id: &UserId,
        room_id: &str,
        event_id: &str,
        limit: usize,
        filter: EventFilter,
        lazy_members: bool,
    ) -> Result<Context> {
        let (event, meta) = self.readable_event(user_id, room_id, event_id)?;
        let before_limit = limit / 2;
        let after_limit = limit - before_limit;
        // Forward pages stop at the live end, which is then the `end` token:
        // paginating on from it repeats nothing.
        let live_end = self.stream.position();
        let page = |from: u64, forward: bool, limit: usize| -> Result<Page> {
            if limit == 0 {
                return Ok(Page {
                    events: Vec::new(),
                    start: from,
                    end: Some(from),
                });
            }
            self.messages(
                user_id,
                &PageRequest {
                    room_id,
                    from: Some(from),
                    to: forward.then_some(live_end),
                    forward,
                    limit,
                    filter: filter.clone(),
                },
            )
        };
        let before = page(meta.count, false, before_limit)?;
        let after = page(meta.count + 1, true, after_limit)?;
        let last = after.events.last().unwrap_or(&event);
        let state_map = self.state_after(last.short)?;
        let senders: std::collections::HashSet<&str> = before
            .events
            .iter()
            .chain(&after.events)
            .chain([&event])
            .map(|e| e.sender.as_str())
            .collect();
        let mut state = Vec::with_capacity(state_map.len());
        for (&key, &short) in state_map.iter() {
            if lazy_members {
                let (kind, state_key) = self.short_ids.state_key(key)?;
                if kind == "m.room.member" && !senders.contains(state_key.as_str()) {
                    continue;
                }
            }
            if let Some(pdu) = self.rooms.pdu(short, &self.short_ids)? {
                state.push(pdu);
            }
        }
        Ok(Context {
            // Nothing lies before position 0.
            start: before.end.unwrap_or(0),
            end: after.end.unwrap_or(live_end),
            before: before.events,
            after: after.events,
            event,
            state,
        })
    }
}
