//! Sliding sync extensions: to-device messages, E2EE key news, account
//! data, receipts and typing. The per-room ones cover the rooms of the
//! lists they name (`lists`, default all) and the rooms they name
//! (`rooms`, default all shown): `*` means all.

use std::collections::HashMap;

use ruma::{DeviceId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value as JsonValue, json};

use super::{RoomWants, Span, connections::ConnState, lists::Candidate};
use crate::{Error, Result, Services, e2ee::device_lists::UserRoom};

#[derive(Debug, Default, Deserialize)]
pub struct ExtensionsRequest {
    #[serde(default)]
    pub to_device: Option<ToDeviceRequest>,
    #[serde(default)]
    pub e2ee: Option<Enabled>,
    #[serde(default)]
    pub account_data: Option<RoomsExtension>,
    #[serde(default)]
    pub receipts: Option<RoomsExtension>,
    #[serde(default)]
    pub typing: Option<RoomsExtension>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Enabled {
    #[serde(default)]
    pub enabled: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct ToDeviceRequest {
    #[serde(default)]
    pub enabled: bool,
    /// The `next_batch` of the last answer the client took in: what it
    /// acknowledges.
    pub since: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RoomsExtension {
    #[serde(default)]
    pub enabled: bool,
    pub lists: Option<Vec<String>>,
    pub rooms: Option<Vec<String>>,
}

const ALL: &str = "*";

/// Which rooms the per-room extensions may speak of.
pub(super) struct Scope<'a> {
    /// Every room of the answer's lists' ranges and subscriptions.
    pub wanted: &'a HashMap<String, RoomWants>,
    /// Room -> the lists whose ranges hold it.
    pub in_lists: &'a HashMap<String, Vec<&'a str>>,
    /// All the user's rooms a list may hold (whose members' keys matter).
    pub candidates: &'a [Candidate],
}

impl Scope<'_> {
    /// The rooms an extension covers.
    fn rooms(&self, extension: &RoomsExtension) -> Vec<&str> {
        let lists = extension.lists.as_deref();
        let rooms = extension.rooms.as_deref();
        let all = |names: Option<&[String]>| names.is_none_or(|n| n.iter().any(|n| n == ALL));
        self.wanted
            .keys()
            .filter(|room| {
                let by_list = self.in_lists.get(*room).is_some_and(|in_lists| {
                    all(lists)
                        || in_lists
                            .iter()
                            .any(|l| lists.is_some_and(|n| n.iter().any(|n| n == l)))
                });
                let by_room = all(rooms) || rooms.is_some_and(|n| n.contains(room));
                by_list || by_room
            })
            .map(String::as_str)
            .collect()
    }
}

/// Whether an extensions section carries anything a client waits for
/// (key counts alone do not).
pub(super) fn has_news(extensions: &JsonValue) -> bool {
    let non_empty = |value: Option<&JsonValue>| match value {
        Some(JsonValue::Array(a)) => !a.is_empty(),
        Some(JsonValue::Object(o)) => !o.is_empty(),
        _ => false,
    };
    non_empty(extensions.pointer("/to_device/events"))
        || non_empty(extensions.pointer("/e2ee/device_lists/changed"))
        || non_empty(extensions.pointer("/e2ee/device_lists/left"))
        || non_empty(extensions.pointer("/account_data/global"))
        || non_empty(extensions.pointer("/account_data/rooms"))
        || non_empty(extensions.pointer("/receipts/rooms"))
        || non_empty(extensions.pointer("/typing/rooms"))
}

impl Services {
    /// The answer's `extensions`. Per-room positions go into `state`.
    pub(super) fn sliding_extensions(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        request: &ExtensionsRequest,
        scope: &Scope<'_>,
        span: Span,
        state: &mut ConnState,
    ) -> Result<JsonValue> {
        let Span { since, next } = span;
        let mut out = Map::new();
        if let Some(to_device) = request.to_device.as_ref().filter(|t| t.enabled) {
            let acknowledged = to_device
                .since
                .as_deref()
                .map(|s| {
                    s.parse::<u64>().map_err(|_| {
                        Error::invalid_param(format!("Invalid to_device since {s:?}."))
                    })
                })
                .transpose()?;
            let events = self.to_device_for_sync(user_id, device_id, acknowledged, next)?;
            out.insert(
                "to_device".into(),
                json!({ "next_batch": next.to_string(), "events": events }),
            );
        }
        if request.e2ee.as_ref().is_some_and(|e| e.enabled) {
            let counts = self.reported_key_counts(user_id, device_id)?;
            let mut e2ee = json!({
                "device_one_time_keys_count": counts,
                "device_unused_fallback_key_types": self.unused_fallback_key_types(user_id, device_id)?,
            });
            if let Some(since) = since {
                let rooms: Vec<UserRoom> = scope
                    .candidates
                    .iter()
                    .filter_map(|c| {
                        c.record.as_ref().map(|r| UserRoom {
                            id: c.room_id.clone(),
                            short: r.short,
                            joined: c.membership == "join",
                        })
                    })
                    .collect();
                let news = self.device_list_news_in(user_id, &rooms, since, next)?;
                e2ee["device_lists"] = json!({ "changed": news.changed, "left": news.left });
            }
            out.insert("e2ee".into(), e2ee);
        }
        if let Some(extension) = request.account_data.as_ref().filter(|e| e.enabled) {
            out.insert(
                "account_data".into(),
                self.account_data_extension(user_id, scope, extension, since, next, state)?,
            );
        }
        if let Some(extension) = request.receipts.as_ref().filter(|e| e.enabled) {
            let mut rooms = Map::new();
            for room_id in scope.rooms(extension) {
                let Some(record) = self.rooms.room(room_id)? else {
                    continue;
                };
                let from = state.extension_rooms.get(room_id).copied().unwrap_or(0);
                if let Some(receipts) = self.receipt_event(user_id, record.short, from, next)? {
                    rooms.insert(room_id.to_owned(), receipts);
                }
            }
            out.insert("receipts".into(), json!({ "rooms": rooms }));
        }
        if let Some(extension) = request.typing.as_ref().filter(|e| e.enabled) {
            let mut rooms = Map::new();
            for room_id in scope.rooms(extension) {
                let Some(record) = self.rooms.room(room_id)? else {
                    continue;
                };
                let (typing, changed_at) = self.typing.in_room(record.short);
                let news = match state.extension_rooms.get(room_id) {
                    Some(&from) => changed_at >= from,
                    None => !typing.is_empty(),
                };
                if news {
                    rooms.insert(
                        room_id.to_owned(),
                        json!({ "type": "m.typing", "content": { "user_ids": typing } }),
                    );
                }
            }
            out.insert("typing".into(), json!({ "rooms": rooms }));
        }
        // The per-room extensions have now covered these rooms up to `next`.
        let mut covered: Vec<&str> = Vec::new();
        for extension in [&request.account_data, &request.receipts, &request.typing]
            .into_iter()
            .flatten()
            .filter(|e| e.enabled)
        {
            covered.extend(scope.rooms(extension));
        }
        for room_id in covered {
            state.extension_rooms.insert(room_id.to_owned(), next);
        }
        Ok(out.into())
    }

    /// Global account data (all on a connection's first answer, else what
    /// changed) and the covered rooms' (all for a room new to the
    /// extension, else what changed since it last covered the room).
    fn account_data_extension(
        &self,
        user_id: &UserId,
        scope: &Scope<'_>,
        extension: &RoomsExtension,
        since: Option<u64>,
        next: u64,
        state: &ConnState,
    ) -> Result<JsonValue> {
        let mut global = Vec::new();
        let mut rooms = Map::new();
        let covered = scope.rooms(extension);
        let oldest = covered
            .iter()
            .filter_map(|room| state.extension_rooms.get(*room).copied())
            .chain(since)
            .min();
        let changes = match oldest {
            Some(from) => self.account_data.changed(user_id, from, next)?,
            None => Vec::new(),
        };
        match since {
            None => {
                for (kind, content) in self.account_data.global(user_id)? {
                    global.push(json!({ "type": kind, "content": content }));
                }
            }
            Some(since) => {
                for change in changes.iter().filter(|c| c.room_id.is_none()) {
                    if change.position >= since {
                        global
                            .push(json!({ "type": change.event_type, "content": change.content }));
                    }
                }
            }
        }
        for room_id in covered {
            let events: Vec<JsonValue> = match state.extension_rooms.get(room_id) {
                None => self
                    .account_data
                    .in_room(user_id, room_id)?
                    .into_iter()
                    .map(|(kind, content)| json!({ "type": kind, "content": content }))
                    .collect(),
                Some(&from) => changes
                    .iter()
                    .filter(|c| c.room_id.as_deref() == Some(room_id) && c.position >= from)
                    .map(|c| json!({ "type": c.event_type, "content": c.content }))
                    .collect(),
            };
            if !events.is_empty() {
                rooms.insert(room_id.to_owned(), events.into());
            }
        }
        Ok(json!({ "global": global, "rooms": rooms }))
    }
}
