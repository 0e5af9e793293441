//! Transactions to appservices: one worker per appservice sends what
//! waits for it, in order, by `PUT /_matrix/app/v1/transactions/{txnId}`.
//!
//! Queued rows first: up to [`BATCH`] events (and the to-device messages
//! among them, MSC4203), deleted once the appservice answered 2xx. Such a
//! transaction's id is the position of its last row, stored before it is
//! first sent (`appservice_txns`): a retry, after a restart too, sends the
//! same rows under the same id, so an appservice that processed it but
//! whose answer was lost recognises it. Then, when no row waits, the
//! appservice's own transactions of what lives in memory (ephemeral
//! events, key counts) and device-list changes. A failing appservice is
//! retried after 1 s, doubling up to five minutes; nothing is dropped.

use std::{
    sync::{Arc, Weak, atomic::Ordering},
    time::{Duration, Instant},
};

use conduit_storage::{KeyPrefix, Str};
use serde_json::{Value as JsonValue, json};

use super::Appservice;
use crate::{Error, ErrorCode, Result, Services, tables, utils};

/// Events per transaction.
const BATCH: usize = 100;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
const TIMEOUT: Duration = Duration::from_secs(60);

/// The queued rows of one transaction, up to position `last` (its id).
struct Queued {
    last: u64,
    /// (position, event short id), oldest first.
    events: Vec<(u64, u64)>,
    /// (position, index, message) of `appservice_to_device`.
    to_device: Vec<(u64, u64, JsonValue)>,
}

/// A transaction of what is kept in memory only (ephemeral events, key
/// counts) or re-read after a restart (device lists).
struct OwnTransaction {
    id: String,
    body: JsonValue,
    /// The device-list position to store once it was taken.
    device_lists_until: Option<u64>,
}

impl Services {
    /// Starts delivering what the appservice queue holds (after a restart
    /// too): a worker per appservice looks at its queue.
    pub fn start_appservice_sender(self: &Arc<Self>) {
        let _ = self.appservices.services.set(Arc::downgrade(self));
        for appservice in self.appservices.registry().all() {
            self.wake_appservice(appservice.id());
        }
        if let Err(e) = self.note_all_key_counts() {
            tracing::error!("cannot read the devices of appservice users: {e}");
        }
    }

    /// After an event is appended: its appservices have work.
    pub(crate) fn wake_appservices(&self, interested: &[Arc<Appservice>]) {
        for appservice in interested {
            self.wake_appservice(appservice.id());
        }
    }

    /// Makes sure a worker delivers what waits for appservice `id`.
    pub(super) fn wake_appservice(&self, id: &str) {
        let Some(services) = self.appservices.services.get().and_then(Weak::upgrade) else {
            return;
        };
        if !utils::locked(&self.appservices.workers).insert(id.to_owned()) {
            return;
        }
        let id = id.to_owned();
        tokio::spawn(async move { services.deliver_transactions(id).await });
    }

    /// The worker of one appservice: sends until nothing waits.
    async fn deliver_transactions(self: Arc<Self>, id: String) {
        let mut backoff = FIRST_BACKOFF;
        let mut failing_since: Option<Instant> = None;
        let mut last_error = String::new();
        // The appservice's own transaction being sent, if any: its retries
        // are the same transaction.
        let mut own: Option<OwnTransaction> = None;
        loop {
            let Some(appservice) = self.appservices.registry().get(&id).cloned() else {
                // Unregistered: its rows went with it.
                utils::locked(&self.appservices.workers).remove(&id);
                return;
            };
            let queued = match self.next_transaction(&id) {
                Ok(queued) => queued,
                Err(e) => {
                    tracing::error!(appservice = id, "cannot read the appservice queue: {e}");
                    None
                }
            };
            let sent = if let Some(queued) = &queued {
                match self.transaction_body(queued) {
                    Ok(body) => {
                        self.put_transaction(&appservice, &queued.last.to_string(), &body)
                            .await
                    }
                    Err(e) => Err(e),
                }
            } else {
                // No event waits: typing, receipts, presence and device
                // news, in a transaction of their own.
                if own.is_none() {
                    own = self.next_own_transaction(&appservice);
                }
                let Some(transaction) = &own else {
                    if self.finish_appservice_worker(&id) {
                        return;
                    }
                    continue;
                };
                self.put_transaction(&appservice, &transaction.id, &transaction.body)
                    .await
            };
            match sent {
                Ok(()) => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            appservice = id,
                            down_s = since.elapsed().as_secs(),
                            "the appservice takes transactions again"
                        );
                    }
                    // A held own transaction waits while queued rows go.
                    let done = match &queued {
                        Some(queued) => self.transaction_sent(&id, queued),
                        None => match own.take().and_then(|t| t.device_lists_until) {
                            Some(until) => self.device_lists_sent(&id, until),
                            None => Ok(()),
                        },
                    };
                    if let Err(e) = done {
                        tracing::error!(appservice = id, "cannot update the appservice queue: {e}");
                    }
                    backoff = FIRST_BACKOFF;
                    last_error.clear();
                }
                Err(reason) => {
                    failing_since.get_or_insert_with(Instant::now);
                    // One warning per reason: an appservice that is down
                    // does not fill the log.
                    if reason != last_error {
                        tracing::warn!(
                            appservice = id,
                            retry_in_s = backoff.as_secs(),
                            "transaction failed: {reason}"
                        );
                        last_error = reason;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// What the transaction to send next holds: the one begun before, if
    /// any; else a new one, whose id (its last position) is written before
    /// it is sent. At most [`BATCH`] events, and [`BATCH`] to-device
    /// messages or the rest of those at the last one's position (one send
    /// to many devices is one position): the list that fills first cuts
    /// the other at its last position.
    fn next_transaction(&self, id: &str) -> Result<Option<Queued>> {
        let begun = self.db.get(&tables::APPSERVICE_TXNS, id)?;
        let prefix = KeyPrefix::new().push::<Str>(id);
        let mut events = Vec::new();
        for row in self.db.scan_prefix(&tables::APPSERVICE_QUEUE, &prefix)? {
            let ((_, position), event) = row?;
            if begun.is_some_and(|last| position > last) || events.len() == BATCH {
                break;
            }
            events.push((position, event));
        }
        let mut to_device: Vec<(u64, u64, JsonValue)> = Vec::new();
        for row in self
            .db
            .scan_prefix(&tables::APPSERVICE_TO_DEVICE, &prefix)?
        {
            let ((_, position, index), message) = row?;
            let past = match begun {
                Some(last) => position > last,
                None => {
                    to_device.len() >= BATCH && to_device.last().is_some_and(|m| m.0 != position)
                }
            };
            if past {
                break;
            }
            to_device.push((position, index, message));
        }
        let last = match begun {
            Some(_) if events.is_empty() && to_device.is_empty() => {
                // Its rows are gone (unregistered meanwhile): begin anew.
                let mut batch = self.db.batch();
                batch.delete(&tables::APPSERVICE_TXNS, id)?;
                self.db.write(batch)?;
                return Ok(None);
            }
            Some(last) => last,
            None => {
                let events_cut = events.last().filter(|_| events.len() == BATCH).map(|e| e.0);
                let to_device_cut = to_device
                    .last()
                    .filter(|_| to_device.len() >= BATCH)
                    .map(|m| m.0);
                if let Some(cut) = events_cut.into_iter().chain(to_device_cut).min() {
                    events.retain(|e| e.0 <= cut);
                    to_device.retain(|m| m.0 <= cut);
                }
                let Some(last) = events
                    .last()
                    .map(|e| e.0)
                    .into_iter()
                    .chain(to_device.last().map(|m| m.0))
                    .max()
                else {
                    return Ok(None);
                };
                let mut batch = self.db.batch();
                batch.put(&tables::APPSERVICE_TXNS, id, last)?;
                self.db.write(batch)?;
                last
            }
        };
        Ok(Some(Queued {
            last,
            events,
            to_device,
        }))
    }

    /// How many events wait for appservice `id`.
    pub fn appservice_queue_len(&self, id: &str) -> Result<usize> {
        let prefix = KeyPrefix::new().push::<Str>(id);
        Ok(self
            .db
            .scan_prefix(&tables::APPSERVICE_QUEUE, &prefix)?
            .count())
    }

    /// The appservice took the transaction: its rows leave the queues.
    fn transaction_sent(&self, id: &str, queued: &Queued) -> Result<()> {
        let mut batch = self.db.batch();
        for (position, _) in &queued.events {
            batch.delete(&tables::APPSERVICE_QUEUE, (id, *position))?;
        }
        for (position, index, _) in &queued.to_device {
            batch.delete(&tables::APPSERVICE_TO_DEVICE, (id, *position, *index))?;
        }
        batch.delete(&tables::APPSERVICE_TXNS, id)?;
        Ok(self.db.write(batch)?)
    }

    /// The appservice's next own transaction (ids of their own, `e<n>`,
    /// unique across restarts: seeded with the start time in ms), `None`
    /// when nothing waits for one.
    fn next_own_transaction(&self, appservice: &Appservice) -> Option<OwnTransaction> {
        let ephemeral = self.appservices.take_ephemeral(appservice.id());
        let news = self.device_news(appservice);
        if ephemeral.is_empty() && news.is_empty() {
            return None;
        }
        let device_lists_until = news.device_lists_until;
        let mut body = json!({ "events": [] });
        if !ephemeral.is_empty() {
            body["ephemeral"] = ephemeral.clone().into();
            body["de.sorunome.msc2409.ephemeral"] = ephemeral.into();
        }
        news.write_into(&mut body);
        let n = self.appservices.own_txns.fetch_add(1, Ordering::Relaxed);
        Some(OwnTransaction {
            id: format!("e{n}"),
            body,
            device_lists_until,
        })
    }

    /// Ends the worker when nothing waits; `false` when something arrived
    /// meanwhile (rows and notes are written before their wake-up).
    fn finish_appservice_worker(&self, id: &str) -> bool {
        let mut workers = utils::locked(&self.appservices.workers);
        let prefix = KeyPrefix::new().push::<Str>(id);
        let waiting = self
            .db
            .scan_prefix(&tables::APPSERVICE_QUEUE, &prefix)
            .map(|mut rows| rows.next().is_some())
            .unwrap_or(false)
            || self
                .db
                .scan_prefix(&tables::APPSERVICE_TO_DEVICE, &prefix)
                .map(|mut rows| rows.next().is_some())
                .unwrap_or(false);
        if waiting || self.appservices.has_ephemeral(id) || self.appservices.has_device_news(id) {
            return false;
        }
        workers.remove(id);
        true
    }

    /// The body of a transaction of queued rows: events in the client
    /// format, to-device messages (MSC4203's unstable key).
    fn transaction_body(&self, queued: &Queued) -> Result<JsonValue, String> {
        let mut body = json!({ "events": self.transaction_events(&queued.events)? });
        if !queued.to_device.is_empty() {
            let messages: Vec<&JsonValue> = queued.to_device.iter().map(|m| &m.2).collect();
            body["de.sorunome.msc2409.to_device"] = json!(messages);
        }
        Ok(body)
    }

    /// The events of a transaction in the client format, `room_id` always
    /// there (a v12 create event has none of its own).
    fn transaction_events(&self, rows: &[(u64, u64)]) -> Result<Vec<JsonValue>, String> {
        let mut events = Vec::with_capacity(rows.len());
        for &(_, short) in rows {
            // An event that is gone (purged) has nothing left to say.
            if let Some(pdu) = self
                .rooms
                .pdu(short, &self.short_ids)
                .map_err(|e| e.to_string())?
            {
                let mut event = pdu.to_client_event();
                event["room_id"] = crate::federation::room_id_of(&pdu).into();
                events.push(event);
            }
        }
        Ok(events)
    }

    /// PUTs one transaction; errors are reasons for the log.
    async fn put_transaction(
        &self,
        appservice: &Appservice,
        txn_id: &str,
        body: &JsonValue,
    ) -> Result<(), String> {
        let path = format!("/_matrix/app/v1/transactions/{txn_id}");
        let (status, _) = self
            .call_appservice(appservice, http::Method::PUT, &path, Some(body))
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }

    /// One request to an appservice, with its `hs_token`: the status and
    /// the answer's JSON (`Null` when it is not JSON).
    pub(crate) async fn call_appservice(
        &self,
        appservice: &Appservice,
        method: http::Method,
        path: &str,
        body: Option<&JsonValue>,
    ) -> Result<(http::StatusCode, JsonValue), String> {
        let Some(base) = &appservice.registration.url else {
            return Err("the appservice has no url".into());
        };
        let client = match self.appservices.client.get() {
            Some(client) => client,
            None => {
                // Appservices are the admin's own programs, on loopback as
                // often as not: no IP policy, unlike pushes and previews.
                utils::use_ring_for_tls();
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("conduit/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| e.to_string())?;
                self.appservices.client.get_or_init(|| client)
            }
        };
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let mut request = client
            .request(method, &url)
            .bearer_auth(&appservice.registration.hs_token);
        if let Some(body) = body {
            request = request
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|e| {
            let reason = crate::federation::client::describe(&e);
            if e.is_timeout() {
                format!("timed out: {reason}")
            } else {
                reason
            }
        })?;
        let status = response.status();
        let answer = response.bytes().await.unwrap_or_default();
        Ok((
            status,
            serde_json::from_slice(&answer).unwrap_or(JsonValue::Null),
        ))
    }

    /// `POST /_matrix/client/v1/appservice/{id}/ping`: asks the appservice's
    /// `/_matrix/app/v1/ping` and says how long it took.
    pub async fn ping_appservice(
        &self,
        caller: &Appservice,
        id: &str,
        transaction_id: Option<&str>,
    ) -> Result<u64> {
        if caller.id() != id {
            return Err(Error::forbidden("An appservice may only ping itself."));
        }
        if caller.registration.url.is_none() {
            return Err(Error::new(
                ErrorCode::UrlNotSet,
                "The appservice has no url.",
            ));
        }
        let body = match transaction_id {
            Some(txn) => json!({ "transaction_id": txn }),
            None => json!({}),
        };
        let started = Instant::now();
        let answer = self
            .call_appservice(
                caller,
                http::Method::POST,
                "/_matrix/app/v1/ping",
                Some(&body),
            )
            .await;
        let took = started.elapsed().as_millis() as u64;
        match answer {
            Ok((status, _)) if status.is_success() => Ok(took),
            Ok((status, body)) => Err(Error::new(
                ErrorCode::BadStatus,
                format!("The appservice answered HTTP {status}: {body}"),
            )
            .with_status(502)),
            Err(reason) if reason.starts_with("timed out") => Err(Error::new(
                ErrorCode::ConnectionTimeout,
                format!("The appservice did not answer in time: {reason}"),
            )
            .with_status(504)),
            Err(reason) => Err(Error::new(
                ErrorCode::ConnectionFailed,
                format!("The appservice cannot be reached: {reason}"),
            )
            .with_status(502)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ruma::{UserId, user_id};
    use serde_json::{Map, json};

    use crate::{Config, Services, users::devices::SessionRequest};

    /// A server with one appservice (never started: nothing is sent)
    /// owning `@bridge_*`, and its puppet `@bridge_a` with `devices`.
    fn server(dir: &std::path::Path, devices: usize) -> (Arc<Services>, &'static UserId) {
        let registration = dir.join("bridge.yaml");
        std::fs::write(
            &registration,
            "id: bridge\nurl: http://127.0.0.1:9\nas_token: at\nhs_token: ht\n\
             sender_localpart: bridgebot\nnamespaces:\n  users:\n    - exclusive: true\n      \
             regex: \"@bridge_.*:localhost\"\n",
        )
        .unwrap();
        let mut config = Config::load(None).unwrap().config;
        config.database_path = dir.join("db");
        config.appservice_registration_files = vec![registration];
        let s = Services::open(config).unwrap();
        let puppet = user_id!("@bridge_a:localhost");
        for n in 0..devices {
            s.devices
                .create_session(SessionRequest {
                    user_id: puppet,
                    device_id: Some(format!("D{n}").as_str().into()),
                    display_name: None,
                    with_refresh_token: false,
                    is_guest: false,
                    client_ip: None,
                    oauth_client: None,
                })
                .unwrap();
        }
        (s, puppet)
    }

    fn send(s: &Services, to: &UserId, device: &str, n: usize) {
        let mut messages = Map::new();
        messages.insert(to.to_string(), json!({ device: { "n": n } }));
        let sender = user_id!("@alice:localhost");
        s.send_to_device(sender, "DEV", "m.test", &format!("t{n}"), &messages)
            .unwrap();
    }

    #[test]
    fn one_send_to_many_devices_stays_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let (s, puppet) = server(dir.path(), 150);
        send(&s, puppet, "*", 1);
        send(&s, puppet, "D0", 2);
        let first = s.next_transaction("bridge").unwrap().unwrap();
        // All 150 of the first position, nothing of the next one.
        assert_eq!(first.to_device.len(), 150);
        assert!(first.to_device.iter().all(|m| m.0 == first.last));
        assert_eq!(first.to_device[0].2["to_user_id"], puppet.as_str());
        // Until it is taken, it is the same transaction.
        let again = s.next_transaction("bridge").unwrap().unwrap();
        assert_eq!((again.last, again.to_device.len()), (first.last, 150));
        s.transaction_sent("bridge", &first).unwrap();
        let second = s.next_transaction("bridge").unwrap().unwrap();
        assert_eq!(second.to_device.len(), 1);
        assert_eq!(second.to_device[0].2["content"], json!({ "n": 2 }));
        s.transaction_sent("bridge", &second).unwrap();
        assert!(s.next_transaction("bridge").unwrap().is_none());
        // The puppet is the appservice's alone: its inbox stayed empty.
        let inbox = s
            .to_device_for_sync(puppet, "D0".into(), None, u64::MAX)
            .unwrap();
        assert!(inbox.is_empty());
    }

    #[test]
    fn separate_sends_are_cut_at_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (s, puppet) = server(dir.path(), 1);
        for n in 0..120 {
            send(&s, puppet, "D0", n);
        }
        let first = s.next_transaction("bridge").unwrap().unwrap();
        assert_eq!(first.to_device.len(), super::BATCH);
        s.transaction_sent("bridge", &first).unwrap();
        let second = s.next_transaction("bridge").unwrap().unwrap();
        assert_eq!(second.to_device.len(), 20);
        assert!(second.last > first.last);
        assert_eq!(second.to_device[0].2["content"], json!({ "n": 100 }));
    }
}
