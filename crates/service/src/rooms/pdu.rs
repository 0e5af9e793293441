//! A stored event as the rest of the server sees it: the PDU's JSON plus
//! the short ids of its references, cheap to clone, and readable by the
//! state-resolution core through its `Event` trait.

use std::sync::Arc;

use conduit_state_res::{Event, ShortEventId};
use serde_json::Value as JsonValue;

use super::short::ShortIds;
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct Pdu(Arc<PduData>);

#[derive(Debug)]
pub struct PduData {
    pub short: ShortEventId,
    pub event_id: String,
    pub room_id: Option<String>,
    pub sender: String,
    pub kind: String,
    pub state_key: Option<String>,
    pub content: JsonValue,
    pub origin_server_ts: u64,
    pub depth: u64,
    pub prev_events: Vec<ShortEventId>,
    pub auth_events: Vec<ShortEventId>,
    pub redacts: Option<String>,
    pub rejected: bool,
    /// The PDU as stored (with `event_id`), for serving.
    pub json: JsonValue,
}

impl std::ops::Deref for Pdu {
    type Target = PduData;

    fn deref(&self) -> &PduData {
        &self.0
    }
}

impl Pdu {
    /// Reads a stored PDU; its references get short ids (created if new).
    pub fn from_json(short: ShortEventId, json: JsonValue, ids: &ShortIds) -> Result<Self> {
        let text = |key: &str| json.get(key).and_then(JsonValue::as_str).map(str::to_owned);
        let number = |key: &str| json.get(key).and_then(JsonValue::as_u64).unwrap_or(0);
        let references = |key: &str| -> Result<Vec<ShortEventId>> {
            json.get(key)
                .and_then(JsonValue::as_array)
                .map(|list| {
                    // Before room version 3 each entry is an `[id, hashes]` pair.
                    list.iter()
                        .filter_map(|entry| {
                            entry
                                .as_str()
                                .or_else(|| entry.as_array()?.first()?.as_str())
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
                .into_iter()
                .map(|id| ids.get_or_create_event_short(id))
                .collect()
        };
        let data = PduData {
            short,
            event_id: text("event_id")
                .ok_or_else(|| Error::internal("stored PDU without event_id"))?,
            room_id: text("room_id"),
            sender: text("sender").unwrap_or_default(),
            kind: text("type").unwrap_or_default(),
            state_key: text("state_key"),
            content: json.get("content").cloned().unwrap_or(JsonValue::Null),
            origin_server_ts: number("origin_server_ts"),
            depth: number("depth"),
            prev_events: references("prev_events")?,
            auth_events: references("auth_events")?,
            redacts: text("redacts").or_else(|| {
                json.pointer("/content/redacts")
                    .and_then(JsonValue::as_str)
                    .map(str::to_owned)
            }),
            rejected: false,
            json,
        };
        Ok(Self(Arc::new(data)))
    }
}

impl Pdu {
    /// The event as clients see it: without the federation fields.
    pub fn to_client_event(&self) -> JsonValue {
        let mut event = serde_json::Map::new();
        for key in [
            "event_id",
            "room_id",
            "sender",
            "type",
            "state_key",
            "content",
            "origin_server_ts",
            "redacts",
        ] {
            if let Some(value) = self.json.get(key) {
                event.insert(key.to_owned(), value.clone());
            }
        }
        // Redactions name their target at the top level before room v11 and
        // in the content from v11 on; clients read either (nio and
        // matrix-js-sdk the top level), so serve both, as the spec advises.
        if self.kind == "m.room.redaction"
            && let Some(target) = &self.redacts
        {
            event.insert("redacts".into(), target.as_str().into());
            if let Some(JsonValue::Object(content)) = event.get_mut("content") {
                content
                    .entry("redacts")
                    .or_insert_with(|| target.as_str().into());
            }
        }
        let age = crate::utils::now_ms().saturating_sub(self.origin_server_ts);
        let mut unsigned = match self.json.get("unsigned") {
            Some(JsonValue::Object(stored)) => stored.clone(),
            _ => serde_json::Map::new(),
        };
        unsigned.insert("age".into(), age.into());
        event.insert("unsigned".into(), JsonValue::Object(unsigned));
        JsonValue::Object(event)
    }
}

impl Event for Pdu {
    fn short_id(&self) -> ShortEventId {
        self.short
    }
    fn event_id(&self) -> &str {
        &self.event_id
    }
    fn room_id(&self) -> Option<&str> {
        self.room_id.as_deref()
    }
    fn event_type(&self) -> &str {
        &self.kind
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn sender(&self) -> &str {
        &self.sender
    }
    fn content(&self) -> &JsonValue {
        &self.content
    }
    fn origin_server_ts(&self) -> u64 {
        self.origin_server_ts
    }
    fn depth(&self) -> u64 {
        self.depth
    }
    fn prev_events(&self) -> &[ShortEventId] {
        &self.prev_events
    }
    fn auth_events(&self) -> &[ShortEventId] {
        &self.auth_events
    }
    fn redacts(&self) -> Option<&str> {
        self.redacts.as_deref()
    }
    fn rejected(&self) -> bool {
        self.rejected
    }
}
