//! What this crate needs to know of an event, as a trait the caller
//! implements over its own event type. Ids are the caller's short integer
//! ids; the string event id is only read for tie-breaks.

use serde_json::Value as JsonValue;

/// A dense integer id the caller gave an event (its `shorteventid`).
pub type ShortEventId = u64;

/// A PDU as the auth rules and state resolution see it.
pub trait Event {
    fn short_id(&self) -> ShortEventId;
    /// The full event id (`$...`), compared as a string for tie-breaks.
    fn event_id(&self) -> &str;
    /// `None` for a v12 create event, which has no `room_id`.
    fn room_id(&self) -> Option<&str>;
    fn event_type(&self) -> &str;
    fn state_key(&self) -> Option<&str>;
    fn sender(&self) -> &str;
    fn content(&self) -> &JsonValue;
    fn origin_server_ts(&self) -> u64;
    /// The event's `depth`; only room version 1's state resolution reads it.
    fn depth(&self) -> u64;
    fn prev_events(&self) -> &[ShortEventId];
    fn auth_events(&self) -> &[ShortEventId];
    /// The event a redaction redacts (top-level before v11, in content from v11).
    fn redacts(&self) -> Option<&str>;
    /// True when the event was rejected on receipt.
    fn rejected(&self) -> bool;

    fn is_type(&self, event_type: &str) -> bool {
        self.event_type() == event_type
    }

    fn is_state(&self, event_type: &str, state_key: &str) -> bool {
        self.event_type() == event_type && self.state_key() == Some(state_key)
    }

    fn content_str(&self, key: &str) -> Option<&str> {
        self.content().get(key).and_then(JsonValue::as_str)
    }

    /// `content.membership` of a member event.
    fn membership(&self) -> Option<&str> {
        self.content_str("membership")
    }
}

/// The server name part of a user id, room id or v1 event id (`@user:server`).
pub fn server_of(id: &str) -> Option<&str> {
    id.split_once(':').map(|(_, server)| server)
}

/// A user id that passes the spec's grammar check used for `sender`:
/// `@localpart:server`, at most 255 bytes, no empty parts.
pub fn is_valid_user_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix('@') else {
        return false;
    };
    match rest.split_once(':') {
        Some((localpart, server)) => !localpart.is_empty() && !server.is_empty() && id.len() <= 255,
        None => false,
    }
}

/// Event types the auth rules read.
pub mod types {
    pub const CREATE: &str = "m.room.create";
    pub const MEMBER: &str = "m.room.member";
    pub const JOIN_RULES: &str = "m.room.join_rules";
    pub const POWER_LEVELS: &str = "m.room.power_levels";
    pub const THIRD_PARTY_INVITE: &str = "m.room.third_party_invite";
    pub const ALIASES: &str = "m.room.aliases";
    pub const REDACTION: &str = "m.room.redaction";
}
