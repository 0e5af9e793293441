//! Transactions to appservices: one worker per appservice with queued
//! events sends them in order, up to [`BATCH`] per
//! `PUT /_matrix/app/v1/transactions/{txnId}`, and deletes them once the
//! appservice answered 2xx.
//!
//! A transaction's id is the position of its last event, stored before it
//! is first sent (`appservice_txns`): a retry, after a restart too, sends
//! the same events under the same id, so an appservice that processed it
//! but whose answer was lost recognises it. A failing appservice is
//! retried after 1 s, doubling up to five minutes; nothing is dropped.

use std::{
    sync::{Arc, Weak},
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

impl Services {
    /// Starts delivering what the appservice queue holds (after a restart
    /// too): a worker per appservice looks at its queue.
    pub fn start_appservice_sender(self: &Arc<Self>) {
        let _ = self.appservices.services.set(Arc::downgrade(self));
        for appservice in self.appservices.registry().all() {
            self.wake_appservice(appservice.id());
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

    /// The worker of one appservice: sends until its queue is empty.
    async fn deliver_transactions(self: Arc<Self>, id: String) {
        let mut backoff = FIRST_BACKOFF;
        let mut failing_since: Option<Instant> = None;
        let mut last_error = String::new();
        // The ephemeral transaction being sent, if any: its retries are the
        // same transaction.
        let mut ephemeral: Option<(String, Vec<JsonValue>)> = None;
        loop {
            let Some(appservice) = self.appservices.registry().get(&id).cloned() else {
                // Unregistered: its rows went with it.
                utils::locked(&self.appservices.workers).remove(&id);
                return;
            };
            let rows = match self.next_transaction(&id) {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(appservice = id, "cannot read the appservice queue: {e}");
                    Vec::new()
                }
            };
            let sent = if let Some(&(txn_id, _)) = rows.last() {
                match self.transaction_events(&rows) {
                    Ok(events) => {
                        let body = json!({ "events": events });
                        self.put_transaction(&appservice, &txn_id.to_string(), &body)
                            .await
                    }
                    Err(e) => Err(e),
                }
            } else {
                // No event waits: typing and receipts, in a transaction of
                // their own (kept in memory only: they are of the moment).
                if ephemeral.is_none() {
                    ephemeral = self.appservices.take_ephemeral(&id);
                }
                let Some((txn_id, events)) = &ephemeral else {
                    if self.finish_appservice_worker(&id) {
                        return;
                    }
                    continue;
                };
                let body = json!({
                    "events": [],
                    "ephemeral": events,
                    "de.sorunome.msc2409.ephemeral": events,
                });
                self.put_transaction(&appservice, txn_id, &body).await
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
                    if rows.is_empty() {
                        ephemeral = None;
                    } else if let Err(e) = self.transaction_sent(&id, &rows) {
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

    /// The events of the transaction to send next: (position, event short
    /// id), oldest first. The one begun before, if any; else a new one,
    /// whose id is written before it is sent.
    fn next_transaction(&self, id: &str) -> Result<Vec<(u64, u64)>> {
        let begun = self.db.get(&tables::APPSERVICE_TXNS, id)?;
        let prefix = KeyPrefix::new().push::<Str>(id);
        let mut rows = Vec::new();
        for row in self.db.scan_prefix(&tables::APPSERVICE_QUEUE, &prefix)? {
            let ((_, position), event) = row?;
            if begun.is_some_and(|last| position > last) || rows.len() == BATCH {
                break;
            }
            rows.push((position, event));
        }
        match (begun, rows.last()) {
            (None, Some(&(last, _))) => {
                let mut batch = self.db.batch();
                batch.put(&tables::APPSERVICE_TXNS, id, last)?;
                self.db.write(batch)?;
            }
            (Some(_), None) => {
                // Its events are gone (unregistered meanwhile): begin anew.
                let mut batch = self.db.batch();
                batch.delete(&tables::APPSERVICE_TXNS, id)?;
                self.db.write(batch)?;
            }
            _ => {}
        }
        Ok(rows)
    }

    /// How many events wait for appservice `id`.
    pub fn appservice_queue_len(&self, id: &str) -> Result<usize> {
        let prefix = KeyPrefix::new().push::<Str>(id);
        Ok(self
            .db
            .scan_prefix(&tables::APPSERVICE_QUEUE, &prefix)?
            .count())
    }

    /// The appservice took the transaction: its events leave the queue.
    fn transaction_sent(&self, id: &str, rows: &[(u64, u64)]) -> Result<()> {
        let mut batch = self.db.batch();
        for (position, _) in rows {
            batch.delete(&tables::APPSERVICE_QUEUE, (id, *position))?;
        }
        batch.delete(&tables::APPSERVICE_TXNS, id)?;
        Ok(self.db.write(batch)?)
    }

    /// Ends the worker when nothing waits; `false` when a row arrived
    /// meanwhile (rows are written before their wake-up).
    fn finish_appservice_worker(&self, id: &str) -> bool {
        let mut workers = utils::locked(&self.appservices.workers);
        let prefix = KeyPrefix::new().push::<Str>(id);
        let waiting = self
            .db
            .scan_prefix(&tables::APPSERVICE_QUEUE, &prefix)
            .map(|mut rows| rows.next().is_some())
            .unwrap_or(false);
        if waiting || self.appservices.has_ephemeral(id) {
            return false;
        }
        workers.remove(id);
        true
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
