//! Step 1 of a received PDU: canonical JSON within the size limit, the
//! room version's event format, and the event's id.

use ruma::{CanonicalJsonObject, CanonicalJsonValue, room_version_rules::RoomVersionRules};
use serde_json::Value as JsonValue;

use crate::{Error, Result};

/// The spec's bound on a PDU, in canonical JSON with its signatures.
pub const MAX_PDU_BYTES: usize = 65_536;
/// The spec's bound on ids, types and state keys.
const MAX_ID_BYTES: usize = 255;

/// A PDU in canonical form, and its id. The object carries no `event_id`
/// for room versions that name events by their hash.
pub struct Parsed {
    pub event_id: String,
    pub object: CanonicalJsonObject,
}

impl Parsed {
    pub fn text(&self, key: &str) -> Option<&str> {
        match self.object.get(key) {
            Some(CanonicalJsonValue::String(text)) => Some(text),
            _ => None,
        }
    }

    pub fn references(&self, key: &str) -> Vec<String> {
        match self.object.get(key) {
            Some(CanonicalJsonValue::Array(list)) => list
                .iter()
                .filter_map(|v| match v {
                    CanonicalJsonValue::String(id) => Some(id.clone()),
                    // Before room version 3: `[id, hashes]` pairs.
                    CanonicalJsonValue::Array(pair) => match pair.first() {
                        Some(CanonicalJsonValue::String(id)) => Some(id.clone()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn origin_server_ts(&self) -> u64 {
        match self.object.get("origin_server_ts") {
            Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).unwrap_or(0),
            _ => 0,
        }
    }

    /// The JSON as stored: with `event_id`, which the rest of the server reads.
    pub fn stored_json(&self) -> Result<JsonValue> {
        let mut object = self.object.clone();
        object.insert(
            "event_id".into(),
            CanonicalJsonValue::String(self.event_id.clone()),
        );
        serde_json::to_value(object).map_err(Error::internal)
    }
}

fn bad(message: impl Into<String>) -> Error {
    Error::bad_json(message)
}

/// Checks a PDU's form for its room version and names it.
pub fn parse_pdu(raw: &JsonValue, rules: &RoomVersionRules) -> Result<Parsed> {
    parse_pdu_value(raw.clone(), rules)
}

/// [`parse_pdu`] of a PDU as received text.
pub fn parse_pdu_text(raw: &str, rules: &RoomVersionRules) -> Result<Parsed> {
    if raw.len() > 2 * MAX_PDU_BYTES {
        return Err(too_large());
    }
    let value = serde_json::from_str(raw).map_err(|e| bad(format!("The PDU is not JSON: {e}")))?;
    parse_pdu_value(value, rules)
}

fn too_large() -> Error {
    Error::new(
        crate::ErrorCode::TooLarge,
        format!("The PDU is larger than {MAX_PDU_BYTES} bytes."),
    )
}

/// [`parse_pdu`] of a PDU the caller owns.
pub fn parse_pdu_value(raw: JsonValue, rules: &RoomVersionRules) -> Result<Parsed> {
    let value = CanonicalJsonValue::try_from(raw)
        .map_err(|e| bad(format!("The PDU is not canonical JSON: {e}")))?;
    let CanonicalJsonValue::Object(mut object) = value else {
        return Err(bad("The PDU is not an object."));
    };
    if value_len(&object) > MAX_PDU_BYTES {
        return Err(too_large());
    }
    let string = |object: &CanonicalJsonObject, key: &str, required: bool| -> Result<()> {
        match object.get(key) {
            Some(CanonicalJsonValue::String(s)) if s.len() <= MAX_ID_BYTES => Ok(()),
            Some(CanonicalJsonValue::String(_)) => Err(bad(format!("`{key}` is too long."))),
            None if !required => Ok(()),
            _ => Err(bad(format!("`{key}` must be a string."))),
        }
    };
    string(&object, "type", true)?;
    string(&object, "sender", true)?;
    string(&object, "state_key", false)?;
    let is_create =
        matches!(object.get("type"), Some(CanonicalJsonValue::String(t)) if t == "m.room.create");
    string(
        &object,
        "room_id",
        !is_create || rules.event_format.require_room_create_room_id,
    )?;
    match object.get("sender") {
        Some(CanonicalJsonValue::String(sender))
            if ruma::UserId::parse(sender.as_str()).is_ok() => {}
        _ => return Err(bad("`sender` is not a user id.")),
    }
    for key in ["origin_server_ts", "depth"] {
        match object.get(key) {
            Some(CanonicalJsonValue::Integer(n)) if i64::from(*n) >= 0 => {}
            _ => return Err(bad(format!("`{key}` must be a non-negative integer."))),
        }
    }
    if !matches!(object.get("content"), Some(CanonicalJsonValue::Object(_))) {
        return Err(bad("`content` must be an object."));
    }
    for key in ["prev_events", "auth_events"] {
        let Some(CanonicalJsonValue::Array(list)) = object.get(key) else {
            return Err(bad(format!("`{key}` must be an array.")));
        };
        // Before v3 references are [id, hashes] pairs; this server does not
        // take part in rooms of those versions' format beyond reading ids.
        let ok = list.iter().all(|item| match item {
            CanonicalJsonValue::String(id) => id.starts_with('$') && id.len() <= MAX_ID_BYTES,
            CanonicalJsonValue::Array(pair) => {
                matches!(pair.first(), Some(CanonicalJsonValue::String(id)) if id.starts_with('$'))
            }
            _ => false,
        });
        if !ok || list.len() > 20 && key == "prev_events" || list.len() > 10 && key == "auth_events"
        {
            return Err(bad(format!("`{key}` is malformed.")));
        }
    }
    if !matches!(object.get("hashes"), Some(CanonicalJsonValue::Object(h)) if matches!(h.get("sha256"), Some(CanonicalJsonValue::String(_))))
    {
        return Err(bad("`hashes.sha256` is missing."));
    }
    if !matches!(
        object.get("signatures"),
        Some(CanonicalJsonValue::Object(_))
    ) {
        return Err(bad("`signatures` is missing."));
    }

    let event_id = if rules.event_format.require_event_id {
        match object.get("event_id") {
            Some(CanonicalJsonValue::String(id)) if id.starts_with('$') => id.clone(),
            _ => return Err(bad("`event_id` is missing.")),
        }
    } else {
        object.remove("event_id");
        let hash = ruma::signatures::reference_hash(&object, rules)
            .map_err(|e| bad(format!("Cannot hash the PDU: {e}")))?;
        format!("${hash}")
    };
    Ok(Parsed { event_id, object })
}

/// The id of a PDU that failed its checks, when it can still be named, so
/// a transaction's answer can say which event was refused.
pub fn event_id_of(raw: &JsonValue, rules: &RoomVersionRules) -> Option<String> {
    if rules.event_format.require_event_id {
        return raw.get("event_id")?.as_str().map(str::to_owned);
    }
    let CanonicalJsonValue::Object(mut object) = CanonicalJsonValue::try_from(raw.clone()).ok()?
    else {
        return None;
    };
    object.remove("event_id");
    let hash = ruma::signatures::reference_hash(&object, rules).ok()?;
    Some(format!("${hash}"))
}

/// The length of an object in canonical JSON.
fn value_len(object: &CanonicalJsonObject) -> usize {
    serde_json::to_vec(object)
        .map(|v| v.len())
        .unwrap_or(usize::MAX)
}
