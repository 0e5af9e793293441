//! Arbitrary event JSON through the auth rules of every room version: no
//! input may panic. Run with `cargo fuzz run auth` in crates/state-res.
#![no_main]

use conduit_state_res::{room_version::ALL, test_room::TestRoom};
use libfuzzer_sys::fuzz_target;
use serde_json::Value as JsonValue;

fuzz_target!(|data: &[u8]| {
    let Ok(JsonValue::Object(event)) = serde_json::from_slice::<JsonValue>(data) else {
        return;
    };
    let text = |key: &str| event.get(key).and_then(JsonValue::as_str);
    let kind = text("type").unwrap_or("m.room.message");
    let sender = text("sender").unwrap_or("@alice:a.example");
    let state_key = text("state_key");
    let content = event.get("content").cloned().unwrap_or(JsonValue::Null);
    let version = data.first().map_or(0, |b| *b as usize) % ALL.len();

    let mut room = TestRoom::new(ALL[version].id, "@alice:a.example", serde_json::json!({}));
    let mut pdu = room.build(sender, kind, state_key, content);
    if event.get("no_auth_events").is_some() {
        pdu.auth.clear();
    }
    if let Some(room_id) = text("room_id") {
        pdu.room_id = Some(room_id.to_owned());
    }
    let _ = room.check(&pdu);
});
