//! The outgoing queue: every event for another server is a row of
//! `federation_queue`, written in the event's own batch (so an
//! acknowledged event reaches its servers even after `kill -9`), and
//! deleted once the server took the transaction. EDUs that must not be
//! lost (to-device messages, device list updates) are rows too, of
//! `federation_edu_queue`; typing, receipts and presence live in memory. One worker per
//! destination keeps one transaction in flight (up to 50 PDUs and 100
//! EDUs), retrying with exponential backoff up to a day; a server that
//! sends us a request is retried at once.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, OnceLock, Weak},
    time::Duration,
};

use ruma::{OwnedServerName, ServerName};
use serde_json::Value as JsonValue;
use tokio::sync::Notify;

use super::client::{DEFAULT_RESPONSE_LIMIT, FedError};
use crate::{Result, Services, tables, utils};

const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;
/// EDUs kept per destination while it is down; older ones are dropped
/// (typing and presence are stale by then anyway).
const MAX_QUEUED_EDUS: usize = 1000;
const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// Events kept as their federation text, shared by every destination.
const PDU_TEXTS_KEPT: usize = 256;

#[derive(Default)]
struct DestinationState {
    running: bool,
    failures: u32,
    /// Why the last transaction failed: repeats of the same reason are
    /// logged at debug, so a server that is down makes one warning.
    last_error: Option<String>,
    wake: Arc<Notify>,
    edus: VecDeque<JsonValue>,
    /// Queue positions below these were delivered: scans start there, not
    /// among the deleted rows before them.
    pdus_from: u64,
    edus_from: u64,
}

pub struct Sender {
    destinations: Mutex<HashMap<OwnedServerName, DestinationState>>,
    services: OnceLock<Weak<Services>>,
    /// The canonical federation JSON of recently queued events: a send in
    /// a room of 300 servers reads and serialises its event once.
    pdu_texts: Mutex<utils::BoundedCache<Arc<str>>>,
}

impl Default for Sender {
    fn default() -> Self {
        Self {
            destinations: Mutex::default(),
            services: OnceLock::new(),
            pdu_texts: Mutex::new(utils::BoundedCache::new(PDU_TEXTS_KEPT)),
        }
    }
}

impl Sender {
    /// Drops an event's kept text (it was redacted: what goes out from now
    /// on is the redacted copy).
    pub(crate) fn forget_text(&self, short: u64) {
        utils::locked(&self.pdu_texts).remove(short);
    }

    /// A server answered or called us: retry what waits for it now.
    pub fn server_is_back(&self, server: &ServerName) {
        let mut destinations = utils::locked(&self.destinations);
        if let Some(state) = destinations.get_mut(server)
            && state.failures > 0
        {
            state.failures = 0;
            state.wake.notify_one();
        }
    }
}

impl Services {
    /// Starts delivering what the queue holds (after a restart too).
    pub fn start_federation_sender(self: &Arc<Self>) -> Result<()> {
        let _ = self.federation.sender.services.set(Arc::downgrade(self));
        self.every(
            Duration::from_secs(3600),
            "pruning federation transactions",
            Self::prune_transactions,
        );
        let mut destinations = std::collections::BTreeSet::new();
        for row in self.db.scan_prefix(
            &tables::FEDERATION_QUEUE,
            &conduit_storage::KeyPrefix::new(),
        )? {
            let ((destination, _), _) = row?;
            destinations.insert(destination);
        }
        for row in self.db.scan_prefix(
            &tables::FEDERATION_EDU_QUEUE,
            &conduit_storage::KeyPrefix::new(),
        )? {
            let ((destination, _, _), _) = row?;
            destinations.insert(destination);
        }
        if !destinations.is_empty() {
            tracing::info!(
                servers = destinations.len(),
                "resuming delivery of queued federation events"
            );
        }
        for destination in destinations {
            if let Ok(server) = OwnedServerName::try_from(destination) {
                self.wake_sender(&server);
            }
        }
        Ok(())
    }

    /// Queues an EDU for `destination` (in memory: EDUs are ephemeral).
    pub fn queue_edu(&self, destination: &ServerName, edu: JsonValue) {
        if !self.config.federates_with(destination) {
            return;
        }
        {
            let mut destinations = utils::locked(&self.federation.sender.destinations);
            let state = destinations.entry(destination.to_owned()).or_default();
            if state.edus.len() >= MAX_QUEUED_EDUS {
                state.edus.pop_front();
            }
            state.edus.push_back(edu);
        }
        self.wake_sender(destination);
    }

    /// Makes sure a worker delivers what waits for `destination`.
    pub(crate) fn wake_sender(&self, destination: &ServerName) {
        let Some(services) = self
            .federation
            .sender
            .services
            .get()
            .and_then(Weak::upgrade)
        else {
            // Not started (a test building services without the sender):
            // the rows wait in the queue.
            return;
        };
        let mut destinations = utils::locked(&self.federation.sender.destinations);
        let state = destinations.entry(destination.to_owned()).or_default();
        if state.running {
            // Only wake a worker that is not backing off: the backoff ends by
            // itself, or early when the server shows up.
            if state.failures == 0 {
                state.wake.notify_one();
            }
            return;
        }
        state.running = true;
        let destination = destination.to_owned();
        tokio::spawn(async move { services.deliver(destination).await });
    }

    /// The worker of one destination: sends until nothing waits.
    async fn deliver(self: Arc<Self>, destination: OwnedServerName) {
        loop {
            let wake = self.destination_wake(&destination);
            let (pdus_from, edus_from) = self.scan_starts(&destination);
            let pdus = match self.queued_pdus(&destination, pdus_from) {
                Ok(pdus) => pdus,
                Err(e) => {
                    tracing::error!(%destination, "cannot read the federation queue: {e}");
                    Vec::new()
                }
            };
            let stored_edus = match self.queued_edus(&destination, edus_from) {
                Ok(edus) => edus,
                Err(e) => {
                    tracing::error!(%destination, "cannot read the federation EDU queue: {e}");
                    Vec::new()
                }
            };
            let edus = self.take_edus(&destination, MAX_EDUS - stored_edus.len());
            let mut all_edus: Vec<JsonValue> =
                stored_edus.iter().map(|(_, edu)| edu.clone()).collect();
            all_edus.extend(edus.iter().cloned());
            if pdus.is_empty() && all_edus.is_empty() {
                if self.finish_worker(&destination) {
                    return;
                }
                continue;
            }
            match self.send_transaction(&destination, &pdus, &all_edus).await {
                Ok(()) => {
                    if let Err(e) = self.delete_delivered(&destination, &pdus, &stored_edus) {
                        tracing::error!(%destination, "cannot update the federation queue: {e}");
                    }
                    let failed = self.clear_failures(&destination);
                    if failed > 0 {
                        tracing::info!(
                            %destination,
                            "federation works again after {failed} failed transactions"
                        );
                    }
                }
                Err(FedError::Denied(_)) => {
                    // Federation with it was turned off: what waits is dropped.
                    let _ = self.delete_delivered(&destination, &pdus, &stored_edus);
                }
                Err(e) => {
                    self.metrics.federation_failure(destination.as_str());
                    let reason = e.to_string();
                    let (failures, new_reason) = self.record_failure(&destination, edus, &reason);
                    let backoff = Duration::from_secs(1u64 << failures.min(17)).min(MAX_BACKOFF);
                    if new_reason {
                        tracing::warn!(
                            %destination,
                            pdus = pdus.len(),
                            failures,
                            retry_in_s = backoff.as_secs(),
                            "federation transaction failed: {reason}"
                        );
                    } else {
                        tracing::debug!(
                            %destination,
                            pdus = pdus.len(),
                            failures,
                            retry_in_s = backoff.as_secs(),
                            "federation transaction failed again: {reason}"
                        );
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = wake.notified() => {}
                    }
                }
            }
        }
    }

    fn destination_wake(&self, destination: &ServerName) -> Arc<Notify> {
        let mut destinations = utils::locked(&self.federation.sender.destinations);
        destinations
            .entry(destination.to_owned())
            .or_default()
            .wake
            .clone()
    }

    /// Ends the worker when nothing waits; `false` when something arrived
    /// meanwhile and the worker goes on.
    fn finish_worker(&self, destination: &ServerName) -> bool {
        let mut destinations = utils::locked(&self.federation.sender.destinations);
        let Some(state) = destinations.get_mut(destination) else {
            return true;
        };
        // Rows are written before their wake-up, under no lock of ours: look
        // once more while holding the state, so none is left behind.
        let rows_wait = self
            .queued_pdus(destination, state.pdus_from)
            .map(|p| !p.is_empty())
            .unwrap_or(false)
            || self
                .queued_edus(destination, state.edus_from)
                .map(|e| !e.is_empty())
                .unwrap_or(false);
        if rows_wait || !state.edus.is_empty() {
            return false;
        }
        state.running = false;
        if state.failures == 0 {
            destinations.remove(destination);
        }
        true
    }

    /// Where a destination's queue scans start (see `DestinationState`).
    fn scan_starts(&self, destination: &ServerName) -> (u64, u64) {
        utils::locked(&self.federation.sender.destinations)
            .get(destination)
            .map_or((0, 0), |state| (state.pdus_from, state.edus_from))
    }

    /// Up to [`MAX_PDUS`] queued `(position, event)` rows for
    /// `destination`, from position `from` on.
    fn queued_pdus(&self, destination: &ServerName, from: u64) -> Result<Vec<(u64, u64)>> {
        let prefix =
            conduit_storage::KeyPrefix::new().push::<conduit_storage::Str>(destination.as_str());
        let from = prefix.clone().push::<conduit_storage::U64>(from);
        self.db
            .scan_from(&tables::FEDERATION_QUEUE, &prefix, from.as_bytes(), true)?
            .take(MAX_PDUS)
            .map(|row| {
                let ((_, position), short) = row?;
                Ok((position, short))
            })
            .collect()
    }

    /// The stored EDUs waiting for `destination` from position `from` on,
    /// with their keys.
    fn queued_edus(
        &self,
        destination: &ServerName,
        from: u64,
    ) -> Result<Vec<((u64, u64), JsonValue)>> {
        let prefix =
            conduit_storage::KeyPrefix::new().push::<conduit_storage::Str>(destination.as_str());
        let from = prefix.clone().push::<conduit_storage::U64>(from);
        self.db
            .scan_from(
                &tables::FEDERATION_EDU_QUEUE,
                &prefix,
                from.as_bytes(),
                true,
            )?
            .take(MAX_EDUS)
            .map(|row| {
                let ((_, position, index), edu) = row?;
                Ok(((position, index), edu))
            })
            .collect()
    }

    fn take_edus(&self, destination: &ServerName, room: usize) -> Vec<JsonValue> {
        let mut destinations = utils::locked(&self.federation.sender.destinations);
        match destinations.get_mut(destination) {
            Some(state) => {
                let n = state.edus.len().min(room);
                state.edus.drain(..n).collect()
            }
            None => Vec::new(),
        }
    }

    /// Forgets the failures of a destination that took a transaction; how many there were.
    fn clear_failures(&self, destination: &ServerName) -> u32 {
        match utils::locked(&self.federation.sender.destinations).get_mut(destination) {
            Some(state) => {
                state.last_error = None;
                std::mem::take(&mut state.failures)
            }
            None => 0,
        }
    }

    /// Counts a failure and puts the EDUs back in front; the new count,
    /// and whether `reason` differs from the last failure's.
    fn record_failure(
        &self,
        destination: &ServerName,
        edus: Vec<JsonValue>,
        reason: &str,
    ) -> (u32, bool) {
        let mut destinations = utils::locked(&self.federation.sender.destinations);
        let state = destinations.entry(destination.to_owned()).or_default();
        for edu in edus.into_iter().rev() {
            if state.edus.len() < MAX_QUEUED_EDUS {
                state.edus.push_front(edu);
            }
        }
        state.failures = state.failures.saturating_add(1);
        let new_reason = state.last_error.as_deref() != Some(reason);
        if new_reason {
            state.last_error = Some(reason.to_owned());
        }
        (state.failures, new_reason)
    }

    fn delete_delivered(
        &self,
        destination: &ServerName,
        pdus: &[(u64, u64)],
        edus: &[((u64, u64), JsonValue)],
    ) -> Result<()> {
        if pdus.is_empty() && edus.is_empty() {
            return Ok(());
        }
        let mut batch = self.db.batch();
        for (position, _) in pdus {
            batch.delete(&tables::FEDERATION_QUEUE, (destination.as_str(), *position))?;
        }
        for ((position, index), _) in edus {
            batch.delete(
                &tables::FEDERATION_EDU_QUEUE,
                (destination.as_str(), *position, *index),
            )?;
        }
        self.db.write(batch)?;
        if let Some(state) =
            utils::locked(&self.federation.sender.destinations).get_mut(destination)
        {
            // Positions only grow (rows are written in stream order), so
            // nothing new can land before what was delivered.
            if let Some((position, _)) = pdus.last() {
                state.pdus_from = state.pdus_from.max(position + 1);
            }
            if let Some(((position, _), _)) = edus.last() {
                state.edus_from = state.edus_from.max(*position);
            }
        }
        Ok(())
    }

    /// The federation JSON of a queued event as canonical text, kept for
    /// the other destinations it goes to.
    fn pdu_text(&self, short: u64) -> Result<Option<Arc<str>>> {
        if let Some(text) = utils::locked(&self.federation.sender.pdu_texts).get(short) {
            return Ok(Some(text));
        }
        let Some(pdu) = self.rooms.pdu(short, &self.short_ids)? else {
            return Ok(None);
        };
        // Stored PDUs are canonical JSON, and serde_json's maps are sorted.
        let text: Arc<str> = serde_json::to_string(&self.federation_pdu_json(&pdu))
            .map_err(crate::Error::internal)?
            .into();
        utils::locked(&self.federation.sender.pdu_texts).insert(short, text.clone());
        Ok(Some(text))
    }

    /// One `PUT /send/{txnId}`. Every transaction gets a new id: a retry
    /// after a crash may carry more events than the first try, and the
    /// receiver drops events it already has by their ids.
    async fn send_transaction(
        &self,
        destination: &ServerName,
        pdus: &[(u64, u64)],
        edus: &[JsonValue],
    ) -> Result<(), FedError> {
        let mut texts = Vec::with_capacity(pdus.len());
        for &(_, short) in pdus {
            match self.pdu_text(short) {
                Ok(Some(text)) => texts.push(text),
                Ok(None) => tracing::warn!(short, "queued event not found; skipped"),
                Err(e) => return Err(FedError::Transport(format!("database: {e}"))),
            }
        }
        let txn_id = format!("{}.{}", utils::now_ms(), utils::random_string(6));
        let body = transaction_text(
            self.config.server_name.as_str(),
            utils::now_ms(),
            &texts,
            edus,
        )?;
        let answer = self
            .federation_request_text(
                destination,
                http::Method::PUT,
                &format!("/_matrix/federation/v1/send/{txn_id}"),
                body,
                DEFAULT_RESPONSE_LIMIT,
            )
            .await?;
        if let Some(results) = answer.get("pdus").and_then(JsonValue::as_object) {
            for (event_id, result) in results {
                if let Some(error) = result.get("error") {
                    tracing::info!(%destination, event_id, %error, "the server refused an event");
                }
            }
        }
        tracing::debug!(%destination, pdus = pdus.len(), edus = edus.len(), "transaction sent");
        Ok(())
    }
}

/// A transaction's body as canonical JSON text, around event texts made
/// once for all destinations: its keys (`edus`, `origin`,
/// `origin_server_ts`, `pdus`) in canonical order.
fn transaction_text(
    origin: &str,
    ts: u64,
    pdus: &[Arc<str>],
    edus: &[JsonValue],
) -> Result<String, FedError> {
    let edus = super::client::canonical_text(&JsonValue::Array(edus.to_vec()))?;
    let origin = serde_json::to_string(origin).map_err(|e| FedError::Signing(e.to_string()))?;
    let size = pdus.iter().map(|p| p.len() + 1).sum::<usize>() + edus.len() + origin.len();
    let mut out = String::with_capacity(size + 64);
    out.push_str("{\"edus\":");
    out.push_str(&edus);
    out.push_str(",\"origin\":");
    out.push_str(&origin);
    out.push_str(",\"origin_server_ts\":");
    out.push_str(&ts.to_string());
    out.push_str(",\"pdus\":[");
    for (i, pdu) in pdus.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(pdu);
    }
    out.push_str("]}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use ruma::CanonicalJsonValue;
    use serde_json::json;

    use super::*;

    #[test]
    fn transaction_text_is_the_canonical_json_of_the_transaction() {
        let pdus = [
            json!({"type": "m.room.message", "content": {"body": "é \"x\""}, "depth": 3}),
            json!({"b": [1, 2], "a": {"z": 1, "y": null}}),
        ];
        let texts: Vec<Arc<str>> = pdus
            .iter()
            .map(|p| serde_json::to_string(p).unwrap().into())
            .collect();
        let edus = vec![json!({"edu_type": "m.typing", "content": {"typing": true}})];
        let text = transaction_text("a.example:8448", 1234, &texts, &edus).unwrap();
        let expected = json!({
            "origin": "a.example:8448",
            "origin_server_ts": 1234,
            "pdus": pdus,
            "edus": edus,
        });
        let canonical = CanonicalJsonValue::try_from(expected).unwrap();
        assert_eq!(text, serde_json::to_string(&canonical).unwrap());
    }
}
