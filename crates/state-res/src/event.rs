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

/// A user id as servers must accept it (the spec's "historical user ids"):
/// `@`, a localpart of any characters but `:` and NUL (possibly empty), `:`,
/// and a server name; at most 255 bytes.
pub fn is_valid_user_id(id: &str) -> bool {
    let Some((localpart, server)) = id.strip_prefix('@').and_then(|rest| rest.split_once(':'))
    else {
        return false;
    };
    id.len() <= 255 && !localpart.contains('\0') && is_valid_server_name(server)
}

/// A server name: a host name, IPv4 address or bracketed IPv6 address,
/// with an optional port.
fn is_valid_server_name(server: &str) -> bool {
    let (host, port) = match server.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, after)) => (v6, after.strip_prefix(':')),
            None => return false,
        },
        None => match server.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (server, None),
        },
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_as_servers_must_accept_them() {
        for ok in [
            "@a:x.org",
            "@:x.org",
            "@Ünï:x.org",
            "@a:x.org:8448",
            "@a:[::1]:8448",
            "@a:1.2.3.4",
        ] {
            assert!(is_valid_user_id(ok), "{ok}");
        }
        for bad in [
            "a:x",
            "@a",
            "@a:",
            "@a\0b:x",
            "@a:x y",
            "@a:x:",
            "@a:x:123456",
            "@a:[::1",
        ] {
            assert!(!is_valid_user_id(bad), "{bad:?}");
        }
    }
}
