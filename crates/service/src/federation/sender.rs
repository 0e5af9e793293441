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
use serde_json::{Value as JsonValue, json};
use tokio::sync::Notify;

use super::client::{DEFAULT_RESPONSE_LIMIT, FedError};
use crate::{Result, Services, tables, utils};

const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;
/// EDUs kept per destination while it is down; older ones are dropped
/// (typing and presence are stale by then anyway).
const MAX_QUEUED_EDUS: usize = 1000;
const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

#[derive(Default)]
struct DestinationState {
    running: bool,
    failures: u32,
    wake: Arc<Notify>,
    edus: VecDeque<JsonValue>,
}

#[derive(Default)]
pub struct Sender {
    destinations: Mutex<HashMap<OwnedServerName, DestinationState>>,
    services: OnceLock<Weak<Services>>,
}

impl Sender {
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
            let pdus = match self.queued_pdus(&destination) {
                Ok(pdus) => pdus,
                Err(e) => {
                    tracing::error!(%destination, "cannot read the federation queue: {e}");
                    Vec::new()
                }
            };
            let stored_edus = match self.queued_edus(&destination) {
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
                    self.set_failures(&destination, 0);
                }
                Err(FedError::Denied(_)) => {
                    // Federation with it was turned off: what waits is dropped.
                    let _ = self.delete_delivered(&destination, &pdus, &stored_edus);
                }
                Err(e) => {
                    let failures = self.record_failure(&destination, edus);
                    let backoff = Duration::from_secs(1u64 << failures.min(17)).min(MAX_BACKOFF);
                    tracing::info!(
                        %destination,
                        pdus = pdus.len(),
                        retry_in_s = backoff.as_secs(),
                        "federation transaction failed: {e}"
                    );
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
            .queued_pdus(destination)
            .map(|p| !p.is_empty())
            .unwrap_or(false)
            || self
                .queued_edus(destination)
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

    fn queued_pdus(&self, destination: &ServerName) -> Result<Vec<(u64, u64)>> {
        let prefix =
            conduit_storage::KeyPrefix::new().push::<conduit_storage::Str>(destination.as_str());
        self.db
            .scan_prefix(&tables::FEDERATION_QUEUE, &prefix)?
            .take(MAX_PDUS)
            .map(|row| {
                let ((_, position), short) = row?;
                Ok((position, short))
            })
            .collect()
    }

    /// The stored EDUs waiting for `destination`, with their keys.
    fn queued_edus(&self, destination: &ServerName) -> Result<Vec<((u64, u64), JsonValue)>> {
        let prefix =
            conduit_storage::KeyPrefix::new().push::<conduit_storage::Str>(destination.as_str());
        self.db
            .scan_prefix(&tables::FEDERATION_EDU_QUEUE, &prefix)?
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

    fn set_failures(&self, destination: &ServerName, failures: u32) {
        if let Some(state) =
            utils::locked(&self.federation.sender.destinations).get_mut(destination)
        {
            state.failures = failures;
        }
    }

    /// Counts a failure and puts the EDUs back in front; the new count.
    fn record_failure(&self, destination: &ServerName, edus: Vec<JsonValue>) -> u32 {
        let mut destinations = utils::locked(&self.federation.sender.destinations);
        let state = destinations.entry(destination.to_owned()).or_default();
        for edu in edus.into_iter().rev() {
            if state.edus.len() < MAX_QUEUED_EDUS {
                state.edus.push_front(edu);
            }
        }
        state.failures = state.failures.saturating_add(1);
        state.failures
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
        Ok(())
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
        let mut pdu_json = Vec::with_capacity(pdus.len());
        for &(_, short) in pdus {
            match self.rooms.pdu(short, &self.short_ids) {
                Ok(Some(pdu)) => pdu_json.push(self.federation_pdu_json(&pdu)),
                Ok(None) => tracing::warn!(short, "queued event not found; skipped"),
                Err(e) => return Err(FedError::Transport(format!("database: {e}"))),
            }
        }
        let txn_id = format!("{}.{}", utils::now_ms(), utils::random_string(6));
        let body = json!({
            "origin": self.config.server_name,
            "origin_server_ts": utils::now_ms(),
            "pdus": pdu_json,
            "edus": edus,
        });
        let answer = self
            .federation_request(
                destination,
                http::Method::PUT,
                &format!("/_matrix/federation/v1/send/{txn_id}"),
                Some(&body),
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
