//! To-device messages (room keys, key requests, verification): kept per
//! device, in position order, until the device acknowledges them by
//! syncing with a token from the response that carried them. A device
//! that never syncs cannot fill the disk: its queue is bounded.

use std::collections::{BTreeMap, HashMap};

use conduit_storage::{KeyPrefix, Str};
use ruma::{DeviceId, ServerName, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as JsonValue, json};

use crate::{Result, Services, tables, utils};

/// Messages a sync (or a dehydrated device's `/events`) carries at most.
pub const PER_SYNC: usize = 100;
/// The largest content one to-device message may have (room keys and
/// verification messages are a few KiB).
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;
/// How long a transaction id is remembered.
const TXN_KEPT_MS: u64 = 24 * 3600 * 1000;

/// A message waiting for a device (table `to_device`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ToDeviceMessage {
    pub sender: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub content: JsonValue,
    /// The `next_batch` of the sync that carried it: a later sync with
    /// that token (or a later one) acknowledges it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<u64>,
}

/// Pending messages per device, counted once from the table and kept up
/// to date after: the bound costs no scan per message.
#[derive(Default)]
pub struct PendingCounts(std::sync::Mutex<HashMap<(String, String), usize>>);

/// Who a send is for: `{user: {device or "*": content}}`.
pub type Messages = Map<String, JsonValue>;

impl Services {
    /// `PUT /sendToDevice/{type}/{txnId}`: delivers to local devices and
    /// queues an `m.direct_to_device` EDU per other server, all in one
    /// batch; a repeated transaction does nothing.
    pub fn send_to_device(
        &self,
        sender: &UserId,
        sender_device: &str,
        kind: &str,
        txn_id: &str,
        messages: &Messages,
    ) -> Result<()> {
        let txn = (sender.as_str(), sender_device, txn_id);
        if self.db.contains(&tables::TO_DEVICE_TXNS, txn)? {
            return Ok(());
        }
        for devices in messages.values().filter_map(JsonValue::as_object) {
            if devices.values().any(too_large) {
                return Err(crate::Error::new(
                    crate::ErrorCode::TooLarge,
                    format!(
                        "A to-device message may have at most {MAX_CONTENT_BYTES} bytes of content."
                    ),
                ));
            }
        }
        let mut local: Vec<(String, String, JsonValue)> = Vec::new();
        let mut remote: BTreeMap<&ServerName, Map<String, JsonValue>> = BTreeMap::new();
        for (user, devices) in messages {
            let (Ok(user_id), Some(devices)) =
                (<&UserId>::try_from(user.as_str()), devices.as_object())
            else {
                continue;
            };
            if user_id.server_name() != self.config.server_name {
                if self.config.federates_with(user_id.server_name()) {
                    remote
                        .entry(user_id.server_name())
                        .or_default()
                        .insert(user.clone(), devices.clone().into());
                }
                continue;
            }
            self.expand_devices(user_id, devices, &mut local)?;
        }
        self.write_to_device(
            sender.as_str(),
            kind,
            Some(txn),
            local,
            remote
                .into_iter()
                .map(|(server, messages)| {
                    let edu = json!({
                        "edu_type": "m.direct_to_device",
                        "content": {
                            "sender": sender,
                            "type": kind,
                            "message_id": format!("{txn_id}.{}", utils::random_string(8)),
                            "messages": messages,
                        },
                    });
                    (server.to_owned(), edu)
                })
                .collect(),
        )
    }

    /// A local user's target devices: named ones that exist, or all (`*`).
    fn expand_devices(
        &self,
        user_id: &UserId,
        devices: &Map<String, JsonValue>,
        into: &mut Vec<(String, String, JsonValue)>,
    ) -> Result<()> {
        let user = user_id.as_str();
        let mut seen = std::collections::BTreeSet::new();
        for (device, content) in devices {
            let targets: Vec<String> = if device == "*" {
                self.devices
                    .list(user_id)?
                    .into_iter()
                    .map(|(id, _)| id.to_string())
                    .chain(self.dehydrated_device_id(user_id)?)
                    .collect()
            } else if self.devices.get(user_id, device.as_str().into())?.is_some() {
                vec![device.clone()]
            } else {
                Vec::new()
            };
            for target in targets {
                if seen.insert(target.clone()) {
                    into.push((user.to_owned(), target, content.clone()));
                }
            }
        }
        Ok(())
    }

    /// Writes messages for local devices (and their copies for appservices,
    /// MSC4203) and EDUs for other servers at one position; `txn` is
    /// remembered in the same batch.
    fn write_to_device(
        &self,
        sender: &str,
        kind: &str,
        txn: Option<(&str, &str, &str)>,
        local: Vec<(String, String, JsonValue)>,
        remote: Vec<(ruma::OwnedServerName, JsonValue)>,
    ) -> Result<()> {
        let limit = self.config.to_device_queue_limit;
        let registry = self.appservices.registry();
        let mut for_appservices = Vec::new();
        let local: Vec<_> = local
            .into_iter()
            .filter(|(user, device, content)| {
                if !registry.all().is_empty()
                    && !self.to_device_for_appservices(
                        &registry,
                        (sender, kind, content),
                        user,
                        device,
                        &mut for_appservices,
                    )
                {
                    // The appservice's own: it alone takes it.
                    return false;
                }
                let room = self.to_device_pending_reserve(user, device, limit);
                if !room {
                    tracing::warn!(user, device, "to-device queue full; message dropped");
                }
                room
            })
            .collect();
        let mut batch = self.db.batch();
        if let Some(txn) = txn {
            batch.put(&tables::TO_DEVICE_TXNS, txn, utils::now_ms())?;
        }
        let users: Vec<&str> = local.iter().map(|(user, _, _)| user.as_str()).collect();
        self.stream.write(
            &self.db,
            batch,
            None,
            |batch, position| {
                for (user, device, content) in &local {
                    let message = ToDeviceMessage {
                        sender: sender.to_owned(),
                        kind: kind.to_owned(),
                        content: content.clone(),
                        delivered_at: None,
                    };
                    batch.put(
                        &tables::TO_DEVICE,
                        (user.as_str(), device.as_str(), position),
                        &message,
                    )?;
                }
                for (server, edu) in &remote {
                    batch.put(
                        &tables::FEDERATION_EDU_QUEUE,
                        (server.as_str(), position, 0),
                        edu,
                    )?;
                }
                for (index, copy) in for_appservices.iter().enumerate() {
                    batch.put(
                        &tables::APPSERVICE_TO_DEVICE,
                        (copy.appservice.id(), position, index as u64),
                        &copy.message,
                    )?;
                }
                Ok(())
            },
            |position| {
                for user in &users {
                    self.stream.mark_user(user, position);
                }
            },
        )?;
        for (server, _) in &remote {
            self.wake_sender(server);
        }
        let appservices: Vec<_> = for_appservices.into_iter().map(|c| c.appservice).collect();
        self.wake_appservices(&appservices);
        Ok(())
    }

    /// Counts a new message for a device if its queue has room.
    fn to_device_pending_reserve(&self, user: &str, device: &str, limit: usize) -> bool {
        let key = (user.to_owned(), device.to_owned());
        let mut counts = utils::locked(&self.to_device_pending.0);
        let count = match counts.get_mut(&key) {
            Some(count) => count,
            None => {
                let prefix = KeyPrefix::new().push::<Str>(user).push::<Str>(device);
                let stored = self
                    .db
                    .scan_prefix(&tables::TO_DEVICE, &prefix)
                    .map(|rows| rows.take(limit + 1).count())
                    .unwrap_or(0);
                counts.entry(key).or_insert(stored)
            }
        };
        if *count >= limit {
            return false;
        }
        *count += 1;
        true
    }

    pub(crate) fn to_device_pending_forget(&self, user: &str, device: &str) {
        utils::locked(&self.to_device_pending.0).remove(&(user.to_owned(), device.to_owned()));
    }

    /// The messages a sync answering with `next` carries to a device:
    /// those acknowledged by `since` are deleted, up to [`PER_SYNC`] of
    /// the others are marked as carried by `next` and returned.
    pub fn to_device_for_sync(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        since: Option<u64>,
        next: u64,
    ) -> Result<Vec<JsonValue>> {
        let (user, device) = (user_id.as_str(), device_id.as_str());
        let prefix = KeyPrefix::new().push::<Str>(user).push::<Str>(device);
        let mut batch = self.db.batch();
        let mut events = Vec::new();
        let mut deleted = 0;
        for row in self.db.scan_prefix(&tables::TO_DEVICE, &prefix)? {
            let ((_, _, position), mut message) = row?;
            if position >= next {
                break;
            }
            if let (Some(carried), Some(since)) = (message.delivered_at, since)
                && since >= carried
            {
                batch.delete(&tables::TO_DEVICE, (user, device, position))?;
                deleted += 1;
                continue;
            }
            if events.len() >= PER_SYNC {
                break;
            }
            events.push(json!({
                "sender": message.sender,
                "type": message.kind,
                "content": message.content,
            }));
            if message.delivered_at != Some(next) {
                message.delivered_at = Some(next);
                batch.put(&tables::TO_DEVICE, (user, device, position), &message)?;
            }
        }
        if !batch.is_empty() {
            self.db.write(batch)?;
        }
        if deleted > 0
            && let Some(count) = utils::locked(&self.to_device_pending.0)
                .get_mut(&(user.to_owned(), device.to_owned()))
        {
            *count = count.saturating_sub(deleted);
        }
        Ok(events)
    }

    /// Takes in `m.direct_to_device` from `origin`: messages of one of its
    /// users for devices here, once per message id.
    pub(crate) fn receive_to_device(&self, origin: &ServerName, content: &JsonValue) -> Result<()> {
        let Some(sender) =
            self.remote_user(origin, content.get("sender").and_then(JsonValue::as_str))
        else {
            return Ok(());
        };
        let (Some(kind), Some(message_id), Some(messages)) = (
            content.get("type").and_then(JsonValue::as_str),
            content.get("message_id").and_then(JsonValue::as_str),
            content.get("messages").and_then(JsonValue::as_object),
        ) else {
            return Ok(());
        };
        let txn = (sender.as_str(), "", message_id);
        if self.db.contains(&tables::TO_DEVICE_TXNS, txn)? {
            return Ok(());
        }
        let mut local = Vec::new();
        for (user, devices) in messages {
            let (Ok(user_id), Some(devices)) =
                (<&UserId>::try_from(user.as_str()), devices.as_object())
            else {
                continue;
            };
            if user_id.server_name() == self.config.server_name && !devices.values().any(too_large)
            {
                self.expand_devices(user_id, devices, &mut local)?;
            }
        }
        self.write_to_device(sender.as_str(), kind, Some(txn), local, Vec::new())
    }

    /// Starts the hourly pruning of old transaction ids.
    pub fn start_to_device_pruner(self: &std::sync::Arc<Self>) {
        self.every(
            std::time::Duration::from_secs(3600),
            "pruning to-device transactions",
            Self::prune_to_device_txns,
        );
    }

    /// Forgets transaction ids older than a day.
    fn prune_to_device_txns(&self) -> Result<()> {
        let cutoff = utils::now_ms().saturating_sub(TXN_KEPT_MS);
        let mut batch = self.db.batch();
        for row in self
            .db
            .scan_prefix(&tables::TO_DEVICE_TXNS, &KeyPrefix::new())?
        {
            let ((sender, device, txn), at) = row?;
            if at < cutoff {
                batch.delete(
                    &tables::TO_DEVICE_TXNS,
                    (sender.as_str(), device.as_str(), txn.as_str()),
                )?;
            }
        }
        self.db.write(batch)?;
        Ok(())
    }
}

/// Whether a message's content is over [`MAX_CONTENT_BYTES`].
fn too_large(content: &JsonValue) -> bool {
    serde_json::to_vec(content).map_or(true, |bytes| bytes.len() > MAX_CONTENT_BYTES)
}
