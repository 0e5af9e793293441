//! The notification history: every event that notified a user, read or
//! not, kept 30 days. `GET /notifications` pages through it newest first,
//! and the pushes read their event and actions from it.

use conduit_storage::{Batch, KeyPrefix, Str, U64};
use ruma::UserId;
use serde::{Deserialize, Serialize};
use serde_json::{Value as JsonValue, json};

use crate::{Error, Result, Services, rooms::pdu::Pdu, rooms::push::Notified, tables, utils};

/// How long the history keeps a notification.
const KEPT_MS: u64 = 30 * 24 * 3600 * 1000;
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct LoggedNotification {
    pub room_id: String,
    pub room: u64,
    pub event: u64,
    pub actions: JsonValue,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub highlight: bool,
    /// Also in the unread counts (see [`Notified::counted`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub counted: bool,
    pub ts: u64,
}

/// Adds an appended event's rows for one notified user to its batch: the
/// unread count row, the history row and a queue row per pusher.
pub(crate) fn write(
    batch: &mut Batch<'_>,
    room_id: &str,
    room: u64,
    pdu: &Pdu,
    count: u64,
    notified: &Notified,
) -> Result<()> {
    let user = notified.user.as_str();
    if notified.counted {
        batch.put(
            &tables::NOTIFICATIONS,
            (user, room, count),
            &notified.notification,
        )?;
    }
    let logged = LoggedNotification {
        room_id: room_id.to_owned(),
        room,
        event: pdu.short,
        actions: serde_json::to_value(&notified.actions).map_err(Error::internal)?,
        highlight: notified.notification.highlight,
        counted: notified.counted,
        ts: utils::now_ms(),
    };
    batch.put(&tables::NOTIFICATION_LOG, (user, count), &logged)?;
    for pusher in &notified.pushers {
        batch.put(&tables::PUSH_QUEUE, (*pusher, count), &true)?;
    }
    Ok(())
}

/// One page of `GET /notifications`.
pub struct Page {
    pub notifications: Vec<JsonValue>,
    pub next_token: Option<String>,
}

impl Services {
    /// Whether a notification is still unread: a counted one until a
    /// receipt (or the user's own event) covers it, an invite's while the
    /// user is still only invited.
    pub(crate) fn notification_unread(
        &self,
        user_id: &UserId,
        count: u64,
        logged: &LoggedNotification,
    ) -> Result<bool> {
        if logged.counted {
            return Ok(self.db.contains(
                &tables::NOTIFICATIONS,
                (user_id.as_str(), logged.room, count),
            )?);
        }
        let membership: Option<String> = self.db.get(
            &tables::USER_ROOMS,
            (user_id.as_str(), logged.room_id.as_str()),
        )?;
        Ok(membership.as_deref() == Some("invite"))
    }

    /// The user's notifications before the token `from`, newest first.
    pub fn notifications_page(
        &self,
        user_id: &UserId,
        from: Option<&str>,
        limit: usize,
        only_highlights: bool,
    ) -> Result<Page> {
        let before = match from {
            Some(token) => token
                .parse::<u64>()
                .map_err(|_| Error::invalid_param("`from` is not a token this server gave."))?,
            None => u64::MAX,
        };
        let limit = limit.clamp(1, MAX_LIMIT);
        let prefix = KeyPrefix::new().push::<Str>(user_id.as_str());
        let start = prefix.clone().push::<U64>(before);
        // (position, notification): the last position makes the token.
        let mut page: Vec<(u64, JsonValue)> = Vec::new();
        let mut more = false;
        for row in self
            .db
            .scan_from(&tables::NOTIFICATION_LOG, &prefix, start.as_bytes(), false)?
        {
            let ((_, count), logged) = row?;
            if only_highlights && !logged.highlight {
                continue;
            }
            if page.len() == limit {
                more = true;
                break;
            }
            let Some(pdu) = self.rooms.pdu(logged.event, &self.short_ids)? else {
                continue;
            };
            let mut event = pdu.to_client_event();
            if let Some(event) = event.as_object_mut() {
                event.remove("room_id");
            }
            let read = !self.notification_unread(user_id, count, &logged)?;
            page.push((
                count,
                json!({
                    "actions": logged.actions,
                    "event": event,
                    "read": read,
                    "room_id": logged.room_id,
                    "ts": logged.ts,
                }),
            ));
        }
        let next_token = more
            .then(|| page.last().map(|(count, _)| count.to_string()))
            .flatten();
        Ok(Page {
            notifications: page.into_iter().map(|(_, n)| n).collect(),
            next_token,
        })
    }

    /// Drops history rows older than 30 days (run every few hours).
    pub(crate) fn prune_notification_log(&self) -> Result<()> {
        let oldest = utils::now_ms().saturating_sub(KEPT_MS);
        let mut batch = self.db.batch();
        for row in self
            .db
            .scan_prefix(&tables::NOTIFICATION_LOG, &KeyPrefix::new())?
        {
            let ((user, count), logged) = row?;
            if logged.ts < oldest {
                batch.delete(&tables::NOTIFICATION_LOG, (user.as_str(), count))?;
            }
        }
        if !batch.is_empty() {
            self.db.write(batch)?;
        }
        Ok(())
    }
}
