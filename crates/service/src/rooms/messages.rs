//! Paginating a room's timeline (`GET /messages`). A token is a position
//! in the server-wide event order: going back from `T` returns events
//! before `T`; going forward returns events from `T` on.

use ruma::UserId;

use super::pdu::Pdu;
use crate::{Error, Result, Services};

/// The most events one page returns, whatever the client asks.
pub const MAX_PAGE: usize = 1000;

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
#[derive(Default)]
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
    /// A page of the timeline for a joined member. (Former members and
    /// history visibility come with sync.)
    pub fn messages(&self, user_id: &UserId, request: &PageRequest<'_>) -> Result<Page> {
        let PageRequest {
            room_id,
            from,
            to,
            forward,
            limit,
            ref filter,
        } = *request;
        if self.rooms.membership(user_id.as_str(), room_id)? != "join" {
            return Err(Error::forbidden("You are not joined to this room."));
        }
        let room = self
            .rooms
            .room(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room."))?;
        let start = from.unwrap_or(if forward { 0 } else { u64::MAX });
        let limit = limit.clamp(1, MAX_PAGE);
        let mut events = Vec::with_capacity(limit);
        let mut cursor = start;
        let mut exhausted = false;
        // Filtered-out events do not count towards the limit: read on until
        // the page is full or the timeline (or `to`) ends.
        'pages: loop {
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
