//! A PDU received from another server, step by step:
//!
//! 1. `parse`: canonical JSON, size limit, the room version's format, its id;
//! 2. `verify`: signatures of the servers that must sign it, content hash
//!    (a mismatch keeps the event redacted);
//! 3. `outliers`: missing auth events fetched and checked against their own
//!    auth events;
//! 4. `dag`: missing prev events fetched (`/get_missing_events`, else the
//!    state at them with `/state`), the state before the event resolved
//!    from its prev events' states, auth against it, soft-fail against the
//!    current state, and the append (forward extremities, current state).
//!
//! Steps 1 and 2, and the fetching of missing auth chains and prev events,
//! run before the room's lock; placing runs under it (only the state at a
//! gap that remains is still fetched there).

pub mod dag;
pub mod outliers;
pub mod parse;
pub mod verify;

use ruma::{ServerName, room_version_rules::RoomVersionRules};
use serde_json::Value as JsonValue;

use self::parse::{Parsed, parse_pdu};
use crate::{Error, Result, Services, rooms::timeline::RoomRecord};

/// What became of a received PDU.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    AlreadyKnown,
    /// Stored, authorised by its past but not by the current state: not
    /// shown, not built upon.
    SoftFailed(String),
    /// Stored as rejected: never state, never shown.
    Rejected(String),
}

/// A room as the pipeline needs it.
#[derive(Clone)]
pub struct RoomContext {
    pub room_id: String,
    pub record: RoomRecord,
    pub version: &'static conduit_state_res::RoomVersion,
    pub rules: RoomVersionRules,
}

impl Services {
    pub(crate) fn room_context(&self, room_id: &str) -> Result<RoomContext> {
        let record = self
            .rooms
            .room(room_id)?
            .ok_or_else(|| Error::not_found(format!("This server is not in room {room_id}.")))?;
        let (version, rules) = crate::rooms::send::version_rules(&record.version)?;
        Ok(RoomContext {
            room_id: room_id.to_owned(),
            record,
            version,
            rules,
        })
    }

    /// Parses and verifies a PDU of a known room (steps 1 and 2).
    pub(crate) async fn parse_and_verify(
        &self,
        room: &RoomContext,
        raw: &JsonValue,
    ) -> Result<Parsed> {
        let mut parsed = parse_pdu(raw, &room.rules)?;
        check_room_of(&parsed, room)?;
        self.verify_pdu(&mut parsed, &room.rules).await?;
        Ok(parsed)
    }

    /// Steps 1 and 2 for a PDU of a transaction from `origin`, which need
    /// no lock (a transaction's PDUs go through them side by side). The
    /// event id, when the PDU can be named, and the checked PDU.
    /// `earlier` says whether an event comes before this one in the same
    /// transaction: such a prev event is placed first, not fetched.
    pub async fn check_pdu(
        &self,
        origin: &ServerName,
        raw: &JsonValue,
        earlier: &(dyn Fn(&str) -> bool + Sync),
    ) -> (Option<String>, Result<Checked>) {
        let Some(room_id) = raw.get("room_id").and_then(JsonValue::as_str) else {
            return (None, Err(Error::bad_json("The PDU has no room_id.")));
        };
        let room = match self.room_context(room_id) {
            Ok(room) => room,
            Err(e) => return (None, Err(e)),
        };
        let mut parsed = match parse_pdu(raw, &room.rules) {
            Ok(parsed) => parsed,
            Err(e) => return (parse::event_id_of(raw, &room.rules), Err(e)),
        };
        let event_id = parsed.event_id.clone();
        let checked = async {
            if self.event_is_stored(&event_id)? {
                return Ok(Checked::Known);
            }
            self.check_server_acl(&room.record, origin)?;
            check_room_of(&parsed, &room)?;
            self.verify_pdu(&mut parsed, &room.rules).await?;
            // What is missing is fetched now, before the room's lock: the
            // auth chain as outliers, the events between our heads and it.
            self.fetch_missing_auth(origin, &room, &parsed).await?;
            let mut gap = Vec::new();
            for prev in parsed.references("prev_events") {
                if !earlier(&prev) && !self.is_placed(&prev)? {
                    gap = self.fetch_gap(origin, &room, &event_id).await;
                    break;
                }
            }
            Ok(Checked::Ready(Box::new(Ready { room, parsed, gap })))
        }
        .await;
        (Some(event_id), checked)
    }

    /// Steps 3 and 4 for a checked PDU, under its room's lock.
    pub async fn place_checked(&self, origin: &ServerName, checked: Checked) -> Result<Outcome> {
        let Ready { room, parsed, gap } = match checked {
            Checked::Known => return Ok(Outcome::AlreadyKnown),
            Checked::Ready(ready) => *ready,
        };
        let _lock = self.rooms.lock(room.record.short).await;
        for missing in gap {
            if let Err(e) = self
                .place_in_dag(origin, &room, missing, dag::Placement::Live)
                .await
            {
                tracing::info!(%origin, "a missing event was not placed: {e}");
            }
        }
        self.place_in_dag(origin, &room, parsed, dag::Placement::Live)
            .await
    }

    /// Fetches the auth chain of `parsed` from `origin` when one of its auth
    /// events is not stored. A failure is only logged: the auth check then
    /// refuses the event.
    pub(crate) async fn fetch_missing_auth(
        &self,
        origin: &ServerName,
        room: &RoomContext,
        parsed: &Parsed,
    ) -> Result<()> {
        for auth in parsed.references("auth_events") {
            if !self.event_is_stored(&auth)? {
                if let Err(e) = self.fetch_auth_chain(origin, room, &parsed.event_id).await {
                    tracing::info!(
                        event_id = parsed.event_id,
                        "cannot fetch its auth chain: {e}"
                    );
                }
                break;
            }
        }
        Ok(())
    }

    /// Whether the event has a place in its room's DAG (not unknown, not
    /// an outlier).
    pub fn is_placed(&self, event_id: &str) -> Result<bool> {
        match self.short_ids.event_short(event_id)? {
            Some(short) => Ok(self.rooms.meta(short)?.is_some()),
            None => Ok(false),
        }
    }

    /// Whether the event's JSON is stored (as timeline event or outlier).
    pub fn event_is_stored(&self, event_id: &str) -> Result<bool> {
        match self.short_ids.event_short(event_id)? {
            Some(short) => Ok(self.db.contains(&crate::tables::PDUS, short)?),
            None => Ok(false),
        }
    }

    /// Refuses `origin` when the room's `m.room.server_acl` denies it.
    pub(crate) fn check_server_acl(&self, room: &RoomRecord, origin: &ServerName) -> Result<()> {
        let state = self.current_state(room)?;
        let Some(acl) = self.state_event(&state, "m.room.server_acl", "")? else {
            return Ok(());
        };
        if server_allowed_by_acl(&acl.content, origin.as_str()) {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "{origin} is denied by the room's server ACL."
            )))
        }
    }
}

/// A PDU that passed the checks needing no lock.
pub enum Checked {
    /// Already stored: nothing more to do.
    Known,
    Ready(Box<Ready>),
}

/// A checked PDU, its room, and the missing events before it, fetched and
/// verified, oldest first.
pub struct Ready {
    room: RoomContext,
    parsed: Parsed,
    gap: Vec<Parsed>,
}

/// The event must belong to the room it was sent for.
/// A create event too: only this room's own (in v12, the one its id names).
pub(crate) fn check_room_of(parsed: &Parsed, room: &RoomContext) -> Result<()> {
    let ours =
        if parsed.text("type") == Some("m.room.create") && room.version.room_id_is_create_event {
            parsed.event_id.strip_prefix('$') == room.room_id.strip_prefix('!')
        } else {
            parsed.text("room_id") == Some(room.room_id.as_str())
        };
    if !ours {
        return Err(Error::bad_json("The event belongs to another room."));
    }
    Ok(())
}

pub(crate) fn log_refusal(origin: &ServerName, event_id: Option<&str>, outcome: &Result<Outcome>) {
    if let Err(e) = outcome {
        tracing::info!(%origin, event_id, "PDU not accepted: {e}");
    }
}

/// Whether an `m.room.server_acl` content lets `server` take part: the
/// port is ignored, IP literals are refused unless allowed, `deny` wins
/// over `allow`, and globs use `*` and `?`.
pub fn server_allowed_by_acl(content: &JsonValue, server: &str) -> bool {
    let host = match server.rsplit_once(':') {
        Some((host, port))
            if !host.ends_with(']')
                && port.chars().all(|c| c.is_ascii_digit())
                && !host.contains(':') =>
        {
            host
        }
        Some((host, port)) if host.ends_with(']') && port.chars().all(|c| c.is_ascii_digit()) => {
            host
        }
        _ => server,
    };
    let is_ip = host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok();
    if is_ip
        && content
            .get("allow_ip_literals")
            .and_then(JsonValue::as_bool)
            == Some(false)
    {
        return false;
    }
    let list = |key: &str| -> Vec<String> {
        content
            .get(key)
            .and_then(JsonValue::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(JsonValue::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    if list("deny").iter().any(|glob| glob_matches(glob, host)) {
        return false;
    }
    list("allow").iter().any(|glob| glob_matches(glob, host))
}

/// `*` matches any run of characters, `?` one; case-insensitive, as
/// server names are.
fn glob_matches(glob: &str, text: &str) -> bool {
    let glob: Vec<char> = glob.to_lowercase().chars().collect();
    let text: Vec<char> = text.to_lowercase().chars().collect();
    let (mut g, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if g < glob.len() && (glob[g] == '?' || glob[g] == text[t]) {
            g += 1;
            t += 1;
        } else if g < glob.len() && glob[g] == '*' {
            star = Some(g);
            mark = t;
            g += 1;
        } else if let Some(s) = star {
            g = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn server_acls_follow_the_spec() {
        let acl = json!({
            "allow": ["*"],
            "deny": ["*.evil.com", "evil.com"],
            "allow_ip_literals": false,
        });
        assert!(server_allowed_by_acl(&acl, "good.org"));
        assert!(server_allowed_by_acl(&acl, "good.org:8448"));
        assert!(!server_allowed_by_acl(&acl, "evil.com"));
        assert!(!server_allowed_by_acl(&acl, "sub.EVIL.com:443"));
        assert!(!server_allowed_by_acl(&acl, "127.0.0.1:8448"));
        assert!(!server_allowed_by_acl(&acl, "[::1]:8448"));
        let ips = json!({ "allow": ["127.0.0.1"], "allow_ip_literals": true });
        assert!(server_allowed_by_acl(&ips, "127.0.0.1:8448"));
        assert!(!server_allowed_by_acl(&ips, "127.0.0.2:8448"));
        // No allow list: nobody.
        assert!(!server_allowed_by_acl(&json!({}), "good.org"));
        assert!(glob_matches("m?trix.*", "matrix.org"));
        assert!(!glob_matches("matrix.org", "matrix.org.evil"));
    }
}
