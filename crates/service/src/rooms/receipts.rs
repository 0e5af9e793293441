//! Read receipts (`m.read`, `m.read.private`, threaded or not) and the
//! fully-read marker. A receipt only moves forward; moving it deletes the
//! notifications it covers, which is what makes unread counts cheap.

use conduit_storage::{KeyPrefix, Str, U64};
use ruma::{RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as JsonValue, json};

use super::{push::Notification, timeline::RoomRecord};
use crate::{Error, Result, Services, tables, utils};

pub const READ: &str = "m.read";
pub const READ_PRIVATE: &str = "m.read.private";
pub const FULLY_READ: &str = "m.fully_read";

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ReceiptRecord {
    pub user: String,
    pub kind: String,
    /// `main` or a thread root; `None` for an unthreaded receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    pub event_id: String,
    pub ts: u64,
}

impl Services {
    /// `POST /receipt` and the receipts of `POST /read_markers`.
    pub async fn set_receipt(
        &self,
        user_id: &UserId,
        room_id: &str,
        kind: &str,
        event_id: &str,
        thread: Option<&str>,
    ) -> Result<()> {
        let room = self.rooms.require_joined(user_id.as_str(), room_id)?;
        let event_count = self.event_count_in(&room, event_id)?;
        if kind == FULLY_READ {
            if thread.is_some() {
                return Err(Error::invalid_param(
                    "The fully-read marker cannot be threaded.",
                ));
            }
            let room_id = <&RoomId>::try_from(room_id).map_err(Error::internal)?;
            return self.account_data.set(
                user_id,
                Some(room_id),
                FULLY_READ,
                &json!({ "event_id": event_id }),
            );
        }
        if kind != READ && kind != READ_PRIVATE {
            return Err(Error::invalid_param(format!(
                "Unknown receipt type {kind}."
            )));
        }
        if let Some(thread) = thread {
            // The event must belong to the thread the receipt names: the
            // main timeline holds thread roots and events outside threads.
            let event = self
                .rooms
                .pdu_by_id(event_id, &self.short_ids)?
                .ok_or_else(|| Error::not_found("Event not found in this room."))?;
            let in_thread = super::push::thread_of(&event);
            let belongs = match thread {
                "main" => in_thread.is_none(),
                root => in_thread.as_deref() == Some(root) || event.event_id == root,
            };
            if !belongs {
                return Err(Error::invalid_param(format!(
                    "The event is not in thread {thread}."
                )));
            }
        }

        let _lock = self.user_locks.lock(user_id).await;
        let slot = format!("{kind} {}", thread.unwrap_or(""));
        let latest_key = (room.short, user_id.as_str(), slot.as_str());
        let previous = self.db.get(&tables::RECEIPT_LATEST, latest_key)?;
        if previous.is_some_and(|(_, count)| count >= event_count) {
            // Receipts only move forward; an older one changes nothing.
            return Ok(());
        }
        let mut batch = self.db.batch();
        if let Some((position, _)) = previous {
            batch.delete(&tables::RECEIPTS, (room.short, position))?;
        }
        let record = ReceiptRecord {
            user: user_id.to_string(),
            kind: kind.to_owned(),
            thread: thread.map(str::to_owned),
            event_id: event_id.to_owned(),
            ts: utils::now_ms(),
        };
        self.clear_notifications(&mut batch, user_id, room.short, event_count, thread)?;
        let fill = |batch: &mut conduit_storage::Batch<'_>, position: u64| {
            batch.put(&tables::RECEIPTS, (room.short, position), &record)?;
            batch.put(
                &tables::RECEIPT_LATEST,
                latest_key,
                &(position, event_count),
            )?;
            Ok(())
        };
        self.stream
            .write(&self.db, batch, Some(room.short), fill, |_| {})?;
        self.push_badge(user_id);
        if kind == READ {
            self.queue_ephemeral(room_id, room.short, || {
                let mut entry = json!({ "ts": record.ts });
                if let Some(thread) = thread {
                    entry["thread_id"] = thread.into();
                }
                Ok(json!({
                    "type": "m.receipt",
                    "content": { event_id: { READ: { user_id.as_str(): entry } } },
                }))
            });
            self.send_receipt_edu(room_id, user_id, event_id, thread, record.ts)?;
        }
        Ok(())
    }

    /// Where an event of this room sits in the stream; `404` for events
    /// the room does not have.
    fn event_count_in(&self, room: &RoomRecord, event_id: &str) -> Result<u64> {
        let not_found = || Error::not_found("Event not found in this room.");
        let short = self
            .short_ids
            .event_short(event_id)?
            .ok_or_else(not_found)?;
        let meta = self.rooms.meta(short)?.ok_or_else(not_found)?;
        if meta.room != room.short {
            return Err(not_found());
        }
        Ok(meta.count)
    }

    /// Deletes the notifications a receipt up to `event_count` covers: all
    /// of them for an unthreaded receipt, those of its thread otherwise.
    fn clear_notifications(
        &self,
        batch: &mut conduit_storage::Batch<'_>,
        user_id: &UserId,
        room: u64,
        event_count: u64,
        thread: Option<&str>,
    ) -> Result<()> {
        let prefix = KeyPrefix::new()
            .push::<Str>(user_id.as_str())
            .push::<U64>(room);
        for row in self.db.scan_prefix(&tables::NOTIFICATIONS, &prefix)? {
            let ((_, _, count), notification) = row?;
            if count > event_count {
                break;
            }
            let covered = match thread {
                None => true,
                Some("main") => notification.thread.is_none(),
                Some(root) => notification.thread.as_deref() == Some(root),
            };
            if covered {
                batch.delete(&tables::NOTIFICATIONS, (user_id.as_str(), room, count))?;
            }
        }
        Ok(())
    }

    /// The `m.receipt` event for a room's receipts at positions `since..until`
    /// as `user_id` may see them (others' private receipts stay hidden);
    /// `None` when there are none.
    pub fn receipt_event(
        &self,
        user_id: &UserId,
        room: u64,
        since: u64,
        until: u64,
    ) -> Result<Option<JsonValue>> {
        let prefix = KeyPrefix::new().push::<U64>(room);
        let start = KeyPrefix::new().push::<U64>(room).push::<U64>(since);
        let mut content = Map::new();
        for row in self
            .db
            .scan_from(&tables::RECEIPTS, &prefix, start.as_bytes(), true)?
        {
            let ((_, position), receipt) = row?;
            if position >= until {
                break;
            }
            if receipt.kind == READ_PRIVATE && receipt.user != user_id.as_str() {
                continue;
            }
            let mut entry = json!({ "ts": receipt.ts });
            if let Some(thread) = receipt.thread {
                entry["thread_id"] = thread.into();
            }
            content
                .entry(receipt.event_id)
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("object")
                .entry(receipt.kind)
                .or_insert_with(|| json!({}))[receipt.user.as_str()] = entry;
        }
        Ok((!content.is_empty()).then(|| json!({ "type": "m.receipt", "content": content })))
    }

    /// The unread counts of a room for a user: `(notifications, highlights)`
    /// outside threads (or in all, when `by_thread` is off) and per thread.
    pub fn unread_counts(
        &self,
        user_id: &UserId,
        room: u64,
        by_thread: bool,
    ) -> Result<UnreadCounts> {
        let prefix = KeyPrefix::new()
            .push::<Str>(user_id.as_str())
            .push::<U64>(room);
        let mut counts = UnreadCounts::default();
        for row in self.db.scan_prefix(&tables::NOTIFICATIONS, &prefix)? {
            let (_, Notification { highlight, thread }) = row?;
            let slot = match thread {
                Some(root) if by_thread => counts.threads.entry(root).or_default(),
                _ => &mut counts.main,
            };
            slot.0 += 1;
            slot.1 += u64::from(highlight);
        }
        Ok(counts)
    }
}

#[derive(Debug, Default)]
pub struct UnreadCounts {
    /// `(notification_count, highlight_count)`.
    pub main: (u64, u64),
    pub threads: std::collections::BTreeMap<String, (u64, u64)>,
}
