//! The bodies of `POST /_matrix/push/v1/notify`, as the Push Gateway API
//! describes them and Synapse sends them: one device per request (each
//! pusher has its own), the pusher's `data` without `url`.

use serde_json::{Map, Value as JsonValue, json};

use super::PusherRecord;
use crate::rooms::pdu::Pdu;

/// The fields of the event a push names.
pub(super) struct Event<'a> {
    pub event_id: &'a str,
    pub kind: &'a str,
    pub sender: &'a str,
    pub state_key: Option<&'a str>,
    pub content: &'a JsonValue,
}

impl<'a> From<&'a Pdu> for Event<'a> {
    fn from(pdu: &'a Pdu) -> Self {
        Self {
            event_id: &pdu.event_id,
            kind: &pdu.kind,
            sender: &pdu.sender,
            state_key: pdu.state_key.as_deref(),
            content: &pdu.content,
        }
    }
}

/// What a push says about an event besides the event itself.
pub(super) struct EventPush<'a> {
    pub event: Event<'a>,
    pub room_id: &'a str,
    /// The user the push is for.
    pub user: &'a str,
    pub sender_display_name: Option<String>,
    pub room_name: Option<String>,
    /// Rooms with unread notifications, plus invites.
    pub badge: u64,
    /// The matched rule's actions.
    pub actions: &'a JsonValue,
}

/// The `set_tweak` actions as a map: `{"sound": "default", "highlight": true}`
/// (a tweak without a value is `true`).
pub(super) fn tweaks(actions: &JsonValue) -> Map<String, JsonValue> {
    let mut tweaks = Map::new();
    for action in actions.as_array().into_iter().flatten() {
        if let Some(name) = action.get("set_tweak").and_then(JsonValue::as_str) {
            let value = action
                .get("value")
                .cloned()
                .unwrap_or(JsonValue::Bool(true));
            tweaks.insert(name.to_owned(), value);
        }
    }
    tweaks
}

/// `high` for what a phone should wake for: encrypted events (they may be
/// messages), highlights and anything with a sound.
fn priority(kind: &str, tweaks: &Map<String, JsonValue>) -> &'static str {
    let set = |name: &str| match tweaks.get(name) {
        Some(JsonValue::Bool(b)) => *b,
        Some(JsonValue::String(s)) => !s.is_empty(),
        Some(JsonValue::Null) | None => false,
        Some(_) => true,
    };
    if kind == "m.room.encrypted" || set("highlight") || set("sound") {
        "high"
    } else {
        "low"
    }
}

/// The one entry of `devices`.
fn device(pusher: &PusherRecord, tweaks: Option<Map<String, JsonValue>>) -> JsonValue {
    let mut data = pusher
        .pusher
        .get("data")
        .and_then(JsonValue::as_object)
        .cloned()
        .unwrap_or_default();
    data.remove("url");
    let mut device = json!({
        "app_id": pusher.app_id(),
        "pushkey": pusher.pushkey(),
        "pushkey_ts": pusher.updated_ms / 1000,
        "data": data,
    });
    if let Some(tweaks) = tweaks.filter(|t| !t.is_empty()) {
        device["tweaks"] = tweaks.into();
    }
    device
}

/// The push for a notifying event, in the pusher's format.
pub(super) fn event_push(pusher: &PusherRecord, push: &EventPush<'_>) -> JsonValue {
    let tweaks = tweaks(push.actions);
    let prio = priority(push.event.kind, &tweaks);
    let counts = json!({ "unread": push.badge });
    if pusher.event_id_only() {
        return json!({ "notification": {
            "event_id": push.event.event_id,
            "room_id": push.room_id,
            "prio": prio,
            "counts": counts,
            "devices": [device(pusher, None)],
        }});
    }
    let mut notification = json!({
        "event_id": push.event.event_id,
        "room_id": push.room_id,
        "type": push.event.kind,
        "sender": push.event.sender,
        "prio": prio,
        "counts": counts,
        "devices": [device(pusher, Some(tweaks))],
    });
    let fields = notification.as_object_mut().expect("an object");
    if push
        .event
        .content
        .as_object()
        .is_some_and(|c| !c.is_empty())
    {
        fields.insert("content".into(), push.event.content.clone());
    }
    if push.event.kind == "m.room.member"
        && let Some(target) = push.event.state_key
    {
        if let Some(membership) = push.event.content.get("membership") {
            fields.insert("membership".into(), membership.clone());
        }
        fields.insert("user_is_target".into(), (target == push.user).into());
    }
    for (name, value) in [
        ("sender_display_name", &push.sender_display_name),
        ("room_name", &push.room_name),
    ] {
        if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
            fields.insert(name.into(), value.as_str().into());
        }
    }
    json!({ "notification": notification })
}

/// The push that only updates the app's badge (after a read receipt).
pub(super) fn badge_push(pusher: &PusherRecord, badge: u64) -> JsonValue {
    json!({ "notification": {
        "counts": { "unread": badge },
        "devices": [device(pusher, None)],
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pusher(format: Option<&str>) -> PusherRecord {
        let mut data =
            json!({ "url": "https://push.example.org/_matrix/push/v1/notify", "custom": 1 });
        if let Some(format) = format {
            data["format"] = format.into();
        }
        PusherRecord {
            id: 1,
            user: "@bob:example.org".into(),
            device_id: None,
            updated_ms: 1_700_000_000_123,
            pusher: json!({ "kind": "http", "app_id": "org.example.app", "pushkey": "KEY", "data": data }),
        }
    }

    fn event<'a>(kind: &'a str, state_key: Option<&'a str>, content: &'a JsonValue) -> Event<'a> {
        Event {
            event_id: "$e",
            kind,
            sender: "@alice:example.org",
            state_key,
            content,
        }
    }

    #[test]
    fn full_format_carries_the_event_and_drops_the_url() {
        let content = json!({ "body": "hi", "msgtype": "m.text" });
        let actions = json!(["notify", { "set_tweak": "sound", "value": "default" }, { "set_tweak": "highlight" }]);
        let push = EventPush {
            event: event("m.room.message", None, &content),
            room_id: "!r:example.org",
            user: "@bob:example.org",
            sender_display_name: Some("Alice".into()),
            room_name: None,
            badge: 2,
            actions: &actions,
        };
        let body = event_push(&pusher(None), &push);
        let n = &body["notification"];
        assert_eq!(n["event_id"], "$e");
        assert_eq!(n["type"], "m.room.message");
        assert_eq!(n["sender_display_name"], "Alice");
        assert!(n.get("room_name").is_none());
        assert_eq!(n["prio"], "high");
        assert_eq!(n["counts"], json!({ "unread": 2 }));
        assert_eq!(n["content"]["body"], "hi");
        let device = &n["devices"][0];
        assert_eq!(device["data"], json!({ "custom": 1 }));
        assert_eq!(device["pushkey_ts"], 1_700_000_000);
        assert_eq!(
            device["tweaks"],
            json!({ "sound": "default", "highlight": true })
        );
    }

    #[test]
    fn event_id_only_has_ids_and_counts_and_low_priority_without_tweaks() {
        let content = json!({ "body": "hi" });
        let actions = json!(["notify", { "set_tweak": "highlight", "value": false }]);
        let push = EventPush {
            event: event("m.room.message", None, &content),
            room_id: "!r:example.org",
            user: "@bob:example.org",
            sender_display_name: Some("Alice".into()),
            room_name: Some("Room".into()),
            badge: 1,
            actions: &actions,
        };
        let body = event_push(&pusher(Some("event_id_only")), &push);
        let n = body["notification"].as_object().unwrap();
        let mut keys: Vec<_> = n.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["counts", "devices", "event_id", "prio", "room_id"]);
        assert_eq!(n["prio"], "low");
        assert!(n["devices"][0].get("tweaks").is_none());
        assert_eq!(n["devices"][0]["data"]["format"], "event_id_only");
    }

    #[test]
    fn invites_say_whom_they_target() {
        let content = json!({ "membership": "invite" });
        let actions = json!(["notify"]);
        let push = EventPush {
            event: event("m.room.member", Some("@bob:example.org"), &content),
            room_id: "!r:example.org",
            user: "@bob:example.org",
            sender_display_name: None,
            room_name: None,
            badge: 1,
            actions: &actions,
        };
        let n = event_push(&pusher(None), &push)["notification"].clone();
        assert_eq!(n["membership"], "invite");
        assert_eq!(n["user_is_target"], true);
        assert_eq!(
            badge_push(&pusher(None), 0)["notification"]["counts"]["unread"],
            0
        );
    }
}
