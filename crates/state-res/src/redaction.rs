//! The redaction algorithm of each room version: which keys of an event
//! survive a redaction. One function, so hashing, signing and serving
//! redacted events all agree.

use serde_json::{Map, Value as JsonValue};

use crate::room_version::{RedactionRules, RoomVersion};

/// Strips `event` (a PDU as a JSON object) to what its room version keeps
/// after a redaction. Anything that is not an object is returned unchanged.
pub fn redact(event: &JsonValue, version: &RoomVersion) -> JsonValue {
    let JsonValue::Object(event) = event else {
        return event.clone();
    };
    let rules = version.redaction;
    let v11 = rules >= RedactionRules::V11;
    let mut kept = Map::new();
    for (key, value) in event {
        let keep = matches!(
            key.as_str(),
            "event_id"
                | "type"
                | "room_id"
                | "sender"
                | "state_key"
                | "hashes"
                | "signatures"
                | "depth"
                | "prev_events"
                | "auth_events"
                | "origin_server_ts"
        ) || (!v11 && matches!(key.as_str(), "prev_state" | "origin" | "membership"));
        if keep {
            kept.insert(key.clone(), value.clone());
        }
    }
    let event_type = event.get("type").and_then(JsonValue::as_str).unwrap_or("");
    let content = event.get("content").and_then(JsonValue::as_object);
    kept.insert(
        "content".into(),
        JsonValue::Object(
            content
                .map(|c| redact_content(event_type, c, rules))
                .unwrap_or_default(),
        ),
    );
    JsonValue::Object(kept)
}

/// The content keys a room version keeps for an event type.
fn redact_content(
    event_type: &str,
    content: &Map<String, JsonValue>,
    rules: RedactionRules,
) -> Map<String, JsonValue> {
    let v11 = rules >= RedactionRules::V11;
    if event_type == "m.room.create" && v11 {
        return content.clone();
    }
    let keys: &[&str] = match event_type {
        "m.room.member" if rules >= RedactionRules::V9 => {
            &["membership", "join_authorised_via_users_server"]
        }
        "m.room.member" => &["membership"],
        "m.room.create" => &["creator"],
        "m.room.join_rules" if rules >= RedactionRules::V8 => &["join_rule", "allow"],
        "m.room.join_rules" => &["join_rule"],
        "m.room.power_levels" if v11 => &[
            "ban",
            "events",
            "events_default",
            "invite",
            "kick",
            "redact",
            "state_default",
            "users",
            "users_default",
        ],
        "m.room.power_levels" => &[
            "ban",
            "events",
            "events_default",
            "kick",
            "redact",
            "state_default",
            "users",
            "users_default",
        ],
        "m.room.aliases" if rules < RedactionRules::V6 => &["aliases"],
        "m.room.history_visibility" => &["history_visibility"],
        "m.room.redaction" if v11 => &["redacts"],
        _ => &[],
    };
    let mut kept: Map<String, JsonValue> = keys
        .iter()
        .filter_map(|k| content.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .collect();
    // v11: a member event keeps `third_party_invite.signed`, and only that.
    if event_type == "m.room.member"
        && v11
        && let Some(signed) = content
            .get("third_party_invite")
            .and_then(|t| t.get("signed"))
    {
        let mut invite = Map::new();
        invite.insert("signed".into(), signed.clone());
        kept.insert("third_party_invite".into(), JsonValue::Object(invite));
    }
    kept
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn v(id: &str) -> &'static RoomVersion {
        RoomVersion::from_id(id).unwrap()
    }

    fn event(kind: &str, content: JsonValue) -> JsonValue {
        json!({
            "type": kind, "room_id": "!r:x", "sender": "@a:x", "state_key": "", "content": content,
            "origin": "x", "membership": "join", "prev_state": [], "unsigned": {"age": 1},
            "hashes": {"sha256": "h"}, "signatures": {}, "depth": 3, "prev_events": [], "auth_events": [],
            "origin_server_ts": 1,
        })
    }

    #[test]
    fn top_level_keys() {
        let e = event("m.room.message", json!({"body": "hi"}));
        let old = redact(&e, v("10"));
        assert_eq!(old["content"], json!({}));
        assert!(old.get("unsigned").is_none());
        assert_eq!(old["origin"], json!("x"));
        let new = redact(&e, v("11"));
        for gone in ["origin", "membership", "prev_state", "unsigned"] {
            assert!(new.get(gone).is_none(), "{gone}");
        }
        assert_eq!(new["depth"], json!(3));
    }

    #[test]
    fn content_keys_per_version() {
        let member = event(
            "m.room.member",
            json!({"membership": "join", "displayname": "A", "join_authorised_via_users_server": "@b:x",
                   "third_party_invite": {"display_name": "c", "signed": {"mxid": "@a:x"}}}),
        );
        assert_eq!(
            redact(&member, v("8"))["content"],
            json!({"membership": "join"})
        );
        assert_eq!(
            redact(&member, v("9"))["content"],
            json!({"membership": "join", "join_authorised_via_users_server": "@b:x"})
        );
        assert_eq!(
            redact(&member, v("11"))["content"]["third_party_invite"],
            json!({"signed": {"mxid": "@a:x"}})
        );

        let create = event(
            "m.room.create",
            json!({"creator": "@a:x", "m.federate": false}),
        );
        assert_eq!(
            redact(&create, v("10"))["content"],
            json!({"creator": "@a:x"})
        );
        assert_eq!(
            redact(&create, v("11"))["content"],
            json!({"creator": "@a:x", "m.federate": false})
        );

        let rules = event(
            "m.room.join_rules",
            json!({"join_rule": "restricted", "allow": []}),
        );
        assert_eq!(
            redact(&rules, v("7"))["content"],
            json!({"join_rule": "restricted"})
        );
        assert_eq!(
            redact(&rules, v("8"))["content"],
            json!({"join_rule": "restricted", "allow": []})
        );

        let power = event(
            "m.room.power_levels",
            json!({"invite": 50, "ban": 50, "notifications": {}}),
        );
        assert_eq!(redact(&power, v("10"))["content"], json!({"ban": 50}));
        assert_eq!(
            redact(&power, v("11"))["content"],
            json!({"ban": 50, "invite": 50})
        );

        let aliases = event("m.room.aliases", json!({"aliases": ["#a:x"]}));
        assert_eq!(
            redact(&aliases, v("5"))["content"],
            json!({"aliases": ["#a:x"]})
        );
        assert_eq!(redact(&aliases, v("6"))["content"], json!({}));

        let redaction = event(
            "m.room.redaction",
            json!({"redacts": "$e", "reason": "spam"}),
        );
        assert_eq!(redact(&redaction, v("10"))["content"], json!({}));
        assert_eq!(
            redact(&redaction, v("11"))["content"],
            json!({"redacts": "$e"})
        );

        assert_eq!(redact(&json!([1]), v("11")), json!([1]));
    }
}
