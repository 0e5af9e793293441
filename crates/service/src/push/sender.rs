//! Delivering pushes: one worker per pusher with queued rows sends them in
//! order, one request each, and deletes a row once the gateway took it (or
//! once it no longer matters: read meanwhile, event gone). A failing
//! gateway is retried after 1 s, doubling up to an hour; a notification it
//! has refused for a day is dropped so the next ones get their chance. A
//! pushkey the gateway names as `rejected` loses its pusher.
//!
//! Badge updates after a read receipt are not queued (a later one says
//! the same, newer): each pusher gets one if its badge changed.

use std::{
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use conduit_storage::{KeyPrefix, U64};
use ruma::UserId;
use serde_json::Value as JsonValue;

use super::{
    PusherRecord,
    history::LoggedNotification,
    payload::{self, EventPush},
};
use crate::{
    Result, Services, outbound,
    rooms::{pdu::Pdu, push::Notified},
    tables, utils,
};

/// Rows read per scan of a pusher's queue.
const BATCH: usize = 20;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long one notification may keep failing before it is dropped.
const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
const TIMEOUT: Duration = Duration::from_secs(30);

/// What came of one push.
enum Outcome {
    /// The gateway took it; it said whether it rejects the pushkey.
    Delivered { rejected: bool },
    /// Nothing to push any more (read meanwhile, event gone).
    Moot,
}

impl Services {
    /// Starts delivering what the push queue holds (after a restart too).
    pub fn start_push_sender(self: &Arc<Self>) -> Result<()> {
        let _ = self.pushers.services.set(Arc::downgrade(self));
        self.every(
            Duration::from_secs(6 * 3600),
            "pruning the notification history",
            Self::prune_notification_log,
        );
        let mut waiting = std::collections::BTreeSet::new();
        for row in self
            .db
            .scan_prefix(&tables::PUSH_QUEUE, &KeyPrefix::new())?
        {
            let ((pusher, _), _) = row?;
            waiting.insert(pusher);
        }
        if !waiting.is_empty() {
            tracing::info!(pushers = waiting.len(), "resuming queued pushes");
        }
        for pusher in waiting {
            self.wake_pusher(pusher);
        }
        Ok(())
    }

    /// After an event is appended: its notified users' pushers have work.
    pub(crate) fn wake_pushers(&self, notified: &[Notified]) {
        for id in notified.iter().flat_map(|n| &n.pushers) {
            self.wake_pusher(*id);
        }
    }

    /// Makes sure a worker delivers what waits for pusher `id`. A worker
    /// that is backing off keeps to its pause.
    fn wake_pusher(&self, id: u64) {
        let Some(services) = self.pushers.services.get().and_then(Weak::upgrade) else {
            // Not started (tests without the sender): the rows wait.
            return;
        };
        let mut registry = utils::locked(&self.pushers.registry);
        let worker = registry.workers.entry(id).or_default();
        if worker.running {
            return;
        }
        worker.running = true;
        tokio::spawn(async move { services.deliver_pushes(id).await });
    }

    /// The worker of one pusher: pushes until its queue is empty.
    async fn deliver_pushes(self: Arc<Self>, id: u64) {
        let mut backoff = FIRST_BACKOFF;
        let mut failing_since: Option<Instant> = None;
        let mut last_error = String::new();
        'scan: loop {
            let Some(pusher) = self.pushers.get(id) else {
                // Removed: its rows went with it.
                utils::locked(&self.pushers.registry).workers.remove(&id);
                return;
            };
            let rows = match self.queued_pushes(id) {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(pusher = id, "cannot read the push queue: {e}");
                    Vec::new()
                }
            };
            if rows.is_empty() {
                if self.finish_push_worker(id) {
                    return;
                }
                continue;
            }
            for count in rows {
                let outcome = self.push_one(&pusher, count).await;
                let done = match &outcome {
                    Ok(_) => true,
                    Err(_) => failing_since.is_some_and(|t| t.elapsed() >= GIVE_UP_AFTER),
                };
                if done {
                    let mut batch = self.db.batch();
                    let deleted = batch
                        .delete(&tables::PUSH_QUEUE, (id, count))
                        .and_then(|()| self.db.write(batch));
                    if let Err(e) = deleted {
                        tracing::error!(pusher = id, "cannot update the push queue: {e}");
                    }
                }
                match outcome {
                    Ok(Outcome::Delivered { rejected: true }) => {
                        tracing::info!(
                            user_id = pusher.user,
                            app_id = pusher.app_id(),
                            "the push gateway rejects the pushkey: pusher removed"
                        );
                        if let Ok(user) = <&UserId>::try_from(pusher.user.as_str()) {
                            let _ = self.remove_pushers(user, |r| r.id == id);
                        }
                        continue 'scan;
                    }
                    Ok(_) => {
                        if failing_since.take().is_some() {
                            tracing::info!(gateway = pusher.url(), "the push gateway works again");
                        }
                        backoff = FIRST_BACKOFF;
                        last_error.clear();
                    }
                    Err(e) if done => {
                        tracing::warn!(
                            gateway = pusher.url(),
                            "a push failed for a day; dropped: {e}"
                        );
                        failing_since = None;
                        backoff = FIRST_BACKOFF;
                    }
                    Err(e) => {
                        failing_since.get_or_insert_with(Instant::now);
                        let reason = e;
                        // One warning per reason: a gateway that is down
                        // does not fill the log.
                        if reason != last_error {
                            tracing::warn!(
                                gateway = pusher.url(),
                                retry_in_s = backoff.as_secs(),
                                "push failed: {reason}"
                            );
                            last_error = reason;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue 'scan;
                    }
                }
            }
        }
    }

    /// Up to [`BATCH`] queued event positions of pusher `id`, oldest first.
    fn queued_pushes(&self, id: u64) -> Result<Vec<u64>> {
        let prefix = KeyPrefix::new().push::<U64>(id);
        self.db
            .scan_prefix(&tables::PUSH_QUEUE, &prefix)?
            .take(BATCH)
            .map(|row| Ok(row?.0.1))
            .collect()
    }

    /// Ends the worker when nothing waits; `false` when a row arrived
    /// meanwhile (rows are written before their wake-up, under no lock of
    /// ours: looking again under the registry's lock leaves none behind).
    fn finish_push_worker(&self, id: u64) -> bool {
        let mut registry = utils::locked(&self.pushers.registry);
        if self.queued_pushes(id).is_ok_and(|rows| !rows.is_empty()) {
            return false;
        }
        if let Some(worker) = registry.workers.get_mut(&id) {
            worker.running = false;
        }
        true
    }

    /// Pushes the notification at `count` to `pusher`'s gateway. Errors
    /// are reasons for the log (a gateway that is down is no server error).
    async fn push_one(&self, pusher: &PusherRecord, count: u64) -> Result<Outcome, String> {
        let user = <&UserId>::try_from(pusher.user.as_str()).map_err(|e| e.to_string())?;
        let Some((logged, pdu, badge, names)) =
            self.push_parts(user, count).map_err(|e| e.to_string())?
        else {
            return Ok(Outcome::Moot);
        };
        let (sender_display_name, room_name) = names;
        let body = payload::event_push(
            pusher,
            &EventPush {
                event: (&pdu).into(),
                room_id: &logged.room_id,
                user: user.as_str(),
                sender_display_name,
                room_name,
                badge,
                actions: &logged.actions,
            },
        );
        let rejected = self.post_push(pusher, &body).await?;
        utils::locked(&self.pushers.registry)
            .workers
            .entry(pusher.id)
            .or_default()
            .last_badge = Some(badge);
        Ok(Outcome::Delivered { rejected })
    }

    /// What the push of the notification at `count` says: `None` when
    /// there is nothing to push any more (read meanwhile, event gone).
    #[allow(clippy::type_complexity)]
    fn push_parts(
        &self,
        user: &UserId,
        count: u64,
    ) -> Result<
        Option<(
            LoggedNotification,
            Pdu,
            u64,
            (Option<String>, Option<String>),
        )>,
    > {
        let Some(logged): Option<LoggedNotification> = self
            .db
            .get(&tables::NOTIFICATION_LOG, (user.as_str(), count))?
        else {
            return Ok(None);
        };
        if !self.notification_unread(user, count, &logged)? {
            return Ok(None);
        }
        let Some(pdu) = self.rooms.pdu(logged.event, &self.short_ids)? else {
            return Ok(None);
        };
        let badge = self.badge_count(user)?;
        let names = self.push_names(&logged.room_id, &pdu.sender)?;
        Ok(Some((logged, pdu, badge, names)))
    }

    /// The sender's display name and the room's name (else its canonical
    /// alias) as the room's current state has them.
    fn push_names(&self, room_id: &str, sender: &str) -> Result<(Option<String>, Option<String>)> {
        let Ok(state) = self.current_state_of(room_id) else {
            return Ok((None, None));
        };
        let display_name = self
            .state_event(&state, "m.room.member", sender)?
            .and_then(|m| {
                m.content
                    .get("displayname")
                    .and_then(JsonValue::as_str)
                    .map(str::to_owned)
            })
            .or_else(|| Some(sender.to_owned()));
        let room_name = match self.state_text(&state, "m.room.name", "name")? {
            Some(name) if !name.is_empty() => Some(name),
            _ => self.state_text(&state, "m.room.canonical_alias", "alias")?,
        };
        Ok((display_name, room_name))
    }

    /// The app badge: rooms with unread notifications, plus invites.
    fn badge_count(&self, user_id: &UserId) -> Result<u64> {
        let prefix = KeyPrefix::new().push::<conduit_storage::Str>(user_id.as_str());
        let mut rooms = 0;
        let mut last_room = None;
        for row in self.db.scan_prefix(&tables::NOTIFICATIONS, &prefix)? {
            let ((_, room, _), _) = row?;
            if last_room != Some(room) {
                rooms += 1;
                last_room = Some(room);
            }
        }
        for row in self.db.scan_prefix(&tables::USER_ROOMS, &prefix)? {
            if row?.1 == "invite" {
                rooms += 1;
            }
        }
        Ok(rooms)
    }

    /// POSTs `body` to the pusher's gateway: whether it rejects the pushkey.
    async fn post_push(&self, pusher: &PusherRecord, body: &JsonValue) -> Result<bool, String> {
        let policy = self.config.ip_policy()?;
        let client = match self.pushers.client.get() {
            Some(client) => client,
            None => {
                let client = outbound::checked_client(&policy, "push", TIMEOUT)
                    .map_err(|e| e.to_string())?;
                self.pushers.client.get_or_init(|| client)
            }
        };
        let url = url::Url::parse(pusher.url()).map_err(|e| e.to_string())?;
        policy.check_url_host(&url)?;
        let request = client
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let response = request.send().await.map_err(|e| {
            if outbound::is_denied_name(&e) {
                "the gateway's name resolves to a denied range".to_owned()
            } else {
                crate::federation::client::describe(&e)
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let answer = response
            .bytes()
            .await
            .map_err(|e| crate::federation::client::describe(&e))?;
        let answer: JsonValue =
            serde_json::from_slice(&answer).map_err(|e| format!("the answer is not JSON: {e}"))?;
        Ok(answer
            .get("rejected")
            .and_then(JsonValue::as_array)
            .is_some_and(|keys| keys.iter().any(|k| k.as_str() == Some(pusher.pushkey()))))
    }

    /// After a read receipt: tells each of the user's pushers the new badge
    /// when it changed, in a task of its own (the receipt does not wait).
    pub(crate) fn push_badge(&self, user_id: &UserId) {
        let pushers = self.pushers.of_user(user_id);
        if pushers.is_empty() {
            return;
        }
        let Some(services) = self.pushers.services.get().and_then(Weak::upgrade) else {
            return;
        };
        let user_id = user_id.to_owned();
        tokio::spawn(async move {
            let badge = match services.badge_count(&user_id) {
                Ok(badge) => badge,
                Err(e) => {
                    tracing::warn!(%user_id, "no badge count: {e}");
                    return;
                }
            };
            for pusher in pushers {
                let changed = {
                    let mut registry = utils::locked(&services.pushers.registry);
                    let worker = registry.workers.entry(pusher.id).or_default();
                    let changed = worker.last_badge != Some(badge);
                    worker.last_badge = Some(badge);
                    changed
                };
                if changed
                    && let Err(e) = services
                        .post_push(&pusher, &payload::badge_push(&pusher, badge))
                        .await
                {
                    tracing::debug!(gateway = pusher.url(), "badge push failed: {e}");
                }
            }
        });
    }
}
