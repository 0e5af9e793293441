//! What appservices that encrypt (bridges in "appservice mode") need of
//! their users' devices, without a `/sync` per puppet:
//!
//! - to-device messages for the devices of their users (MSC4203), kept in
//!   `appservice_to_device` (written in the message's own batch) and sent
//!   in the transaction of the events around them. A message for a user an
//!   appservice claims exclusively (or its sender) goes to the appservice
//!   only: such users do not sync, so nothing would ever take it out of
//!   their inbox (MSC4203's suggestion). A user of a shared namespace
//!   keeps it in their inbox too.
//! - for registrations with `org.matrix.msc3202: true`: the one-time-key
//!   counts and unused fallback key types of their users' devices whose
//!   keys changed since the last transaction (of all of them after a
//!   start: which changed is kept in memory), and whose device lists
//!   changed among the users they are interested in, read from
//!   `key_changes` after a position stored per appservice. They go in the
//!   appservice's own transactions, next to the ephemeral events.

use std::{collections::HashMap, sync::Arc};

use conduit_storage::KeyPrefix;
use ruma::{DeviceId, OwnedUserId, UserId};
use serde_json::{Map, Value as JsonValue, json};

use super::{Appservice, Appservices, Registry};
use crate::{Result, Services, tables, utils};

/// A to-device message as an appservice gets it, and for whom.
pub(crate) struct AppserviceMessage {
    pub appservice: Arc<Appservice>,
    pub message: JsonValue,
}

/// What an appservice's own transaction says of its users' devices.
#[derive(Default)]
pub(super) struct DeviceNews {
    /// `org.matrix.msc3202.device_one_time_keys_count`.
    pub key_counts: Map<String, JsonValue>,
    /// `org.matrix.msc3202.device_unused_fallback_key_types`.
    pub fallback_types: Map<String, JsonValue>,
    /// `org.matrix.msc3202.device_lists.changed`.
    pub changed: Vec<String>,
    /// The position to store once the appservice took `changed`.
    pub device_lists_until: Option<u64>,
}

impl DeviceNews {
    pub(super) fn is_empty(&self) -> bool {
        self.key_counts.is_empty() && self.fallback_types.is_empty() && self.changed.is_empty()
    }

    /// Adds the MSC3202 fields to a transaction's body.
    pub(super) fn write_into(self, body: &mut JsonValue) {
        if !self.key_counts.is_empty() {
            body["org.matrix.msc3202.device_one_time_keys_count"] = self.key_counts.into();
        }
        if !self.fallback_types.is_empty() {
            body["org.matrix.msc3202.device_unused_fallback_key_types"] =
                self.fallback_types.into();
        }
        if !self.changed.is_empty() {
            body["org.matrix.msc3202.device_lists"] =
                json!({ "changed": self.changed, "left": [] });
        }
    }
}

impl Registry {
    /// The appservices that want key counts and device lists.
    fn msc3202(&self) -> impl Iterator<Item = &Arc<Appservice>> {
        self.all
            .iter()
            .filter(|a| a.registration.msc3202 && a.registration.url.is_some())
    }
}

impl Appservices {
    fn take_key_counts(&self, id: &str) -> Vec<(OwnedUserId, String)> {
        utils::locked(&self.key_counts)
            .remove(id)
            .map(|devices| devices.into_iter().collect())
            .unwrap_or_default()
    }

    /// Whether key counts or device lists wait for appservice `id`.
    pub(super) fn has_device_news(&self, id: &str) -> bool {
        utils::locked(&self.key_counts).contains_key(id)
            || utils::locked(&self.device_list_nudges).contains(id)
    }
}

impl Services {
    /// For a to-device message to a local device: adds its copies for the
    /// appservices whose users the recipient is to `into`, and says whether
    /// the recipient's inbox keeps it too.
    pub(crate) fn to_device_for_appservices(
        &self,
        registry: &Registry,
        message: (&str, &str, &JsonValue),
        user: &str,
        device: &str,
        into: &mut Vec<AppserviceMessage>,
    ) -> bool {
        let Ok(user_id) = <&UserId>::try_from(user) else {
            return true;
        };
        let (sender, kind, content) = message;
        let mut inbox = true;
        for appservice in registry
            .all()
            .iter()
            .filter(|a| a.registration.url.is_some() && a.is_user(user_id))
        {
            into.push(AppserviceMessage {
                appservice: appservice.clone(),
                message: json!({
                    "to_user_id": user,
                    "to_device_id": device,
                    "sender": sender,
                    "type": kind,
                    "content": content,
                }),
            });
            inbox &= !appservice.claims_user_exclusively(user_id);
        }
        inbox
    }

    /// After a device's one-time or fallback keys changed (uploaded,
    /// claimed): the MSC3202 appservices of its user are to be told.
    pub(crate) fn note_key_counts(&self, user_id: &UserId, device_id: &DeviceId) {
        let registry = self.appservices.registry();
        for appservice in registry.msc3202().filter(|a| a.is_user(user_id)) {
            utils::locked(&self.appservices.key_counts)
                .entry(appservice.id().to_owned())
                .or_default()
                .insert((user_id.to_owned(), device_id.to_string()));
            self.wake_appservice(appservice.id());
        }
    }

    /// After someone's devices changed (`key_changes` has a new row): the
    /// MSC3202 appservices look whether they are interested.
    pub(crate) fn nudge_device_lists(&self) {
        let registry = self.appservices.registry();
        for appservice in registry.msc3202() {
            utils::locked(&self.appservices.device_list_nudges).insert(appservice.id().to_owned());
            self.wake_appservice(appservice.id());
        }
    }

    /// At start: the counts of every device with keys of the MSC3202
    /// appservices' users are news, as which changed meanwhile is unknown.
    pub(super) fn note_all_key_counts(&self) -> Result<()> {
        let registry = self.appservices.registry();
        if registry.msc3202().next().is_none() {
            return Ok(());
        }
        for row in self
            .db
            .scan_prefix(&tables::DEVICE_KEYS, &KeyPrefix::new())?
        {
            let ((user, device), _) = row?;
            if let Ok(user_id) = <&UserId>::try_from(user.as_str())
                && self.users.is_local(user_id)
            {
                self.note_key_counts(user_id, device.as_str().into());
            }
        }
        for appservice in registry.msc3202() {
            self.nudge_device_lists_of(appservice.id());
        }
        Ok(())
    }

    fn nudge_device_lists_of(&self, id: &str) {
        utils::locked(&self.appservices.device_list_nudges).insert(id.to_owned());
        self.wake_appservice(id);
    }

    /// What the appservice's next own transaction says of devices: the
    /// counts of the devices noted, the device lists changed since its
    /// position. Failures are logged: the news waits for the next nudge.
    pub(super) fn device_news(&self, appservice: &Appservice) -> DeviceNews {
        let id = appservice.id();
        let mut news = DeviceNews::default();
        for (user_id, device) in self.appservices.take_key_counts(id) {
            let device_id: &DeviceId = device.as_str().into();
            let counts = match self.reported_key_counts(&user_id, device_id) {
                Ok(counts) => counts,
                Err(e) => {
                    tracing::warn!(appservice = id, "cannot read key counts: {e}");
                    continue;
                }
            };
            let fallback = self
                .unused_fallback_key_types(&user_id, device_id)
                .unwrap_or_default();
            let user = user_id.to_string();
            insert_for_device(&mut news.key_counts, &user, &device, json!(counts));
            insert_for_device(&mut news.fallback_types, &user, &device, json!(fallback));
        }
        if utils::locked(&self.appservices.device_list_nudges).remove(id) {
            match self.device_lists_changed(appservice) {
                Ok(Some((changed, until))) => {
                    news.changed = changed;
                    news.device_lists_until = Some(until);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(appservice = id, "cannot read device-list changes: {e}"),
            }
        }
        news
    }

    /// The users the appservice is interested in whose devices changed
    /// since its position, and the position after them; `None` when there
    /// are none (the position then moves on at once).
    fn device_lists_changed(&self, appservice: &Appservice) -> Result<Option<(Vec<String>, u64)>> {
        let id = appservice.id();
        let until = self.stream.position();
        let Some(since) = self.db.get(&tables::APPSERVICE_DEVICE_LISTS, id)? else {
            // A new appservice learns of changes from now on.
            self.device_lists_sent(id, until)?;
            return Ok(None);
        };
        let mut changed = Vec::new();
        let mut rooms = HashMap::new();
        self.for_each_key_change(since, until, |user| {
            if let Ok(user_id) = <&UserId>::try_from(user.as_str())
                && self.interested_in_user(appservice, user_id, &mut rooms)?
            {
                changed.push(user);
            }
            Ok(())
        })?;
        if changed.is_empty() {
            if since != until {
                self.device_lists_sent(id, until)?;
            }
            return Ok(None);
        }
        Ok(Some((changed, until)))
    }

    /// The appservice was told of device-list changes up to `until`.
    pub(super) fn device_lists_sent(&self, id: &str, until: u64) -> Result<()> {
        let mut batch = self.db.batch();
        batch.put(&tables::APPSERVICE_DEVICE_LISTS, id, until)?;
        Ok(self.db.write(batch)?)
    }
}

/// `{user: {device: value}}`, as MSC3202 maps counts to devices.
fn insert_for_device(map: &mut Map<String, JsonValue>, user: &str, device: &str, value: JsonValue) {
    let devices = map
        .entry(user.to_owned())
        .or_insert_with(|| JsonValue::Object(Map::new()));
    devices[device] = value;
}
