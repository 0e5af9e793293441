//! What other servers may ask of this one: transactions (`/send`), joins
//! (`make_join`, `send_join`), events, state and auth chains, missing
//! events and backfill, profiles and aliases. Room data goes only to
//! servers that may see it.

use std::collections::{BTreeSet, HashSet, VecDeque};

use conduit_state_res::ShortEventId;
use ruma::{OwnedServerName, ServerName, UserId};
use serde_json::{Value as JsonValue, json};

use super::incoming::Outcome;
use crate::{Error, Result, Services, rooms::pdu::Pdu, tables, utils};

/// The spec's bounds on one transaction.
pub const MAX_TXN_PDUS: usize = 50;
pub const MAX_TXN_EDUS: usize = 100;
/// How long the answer to a transaction is kept.
const TXN_KEPT_MS: u64 = 24 * 3600 * 1000;

/// The answer to a `/send` transaction, and when it was given.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
pub struct TxnRecord {
    pub answer: JsonValue,
    pub at: u64,
}

/// Events one backfill or missing-events answer gives at most.
const MAX_PAGE: usize = 100;

impl Services {
    /// `PUT /send/{txnId}`: each PDU through the pipeline, each EDU to its
    /// handler. A transaction id seen before gets its first answer again.
    pub async fn receive_transaction(
        self: &std::sync::Arc<Self>,
        origin: &ServerName,
        txn_id: &str,
        body: &JsonValue,
    ) -> Result<JsonValue> {
        if let Some(seen) = self
            .db
            .get(&tables::FEDERATION_TXNS, (origin.as_str(), txn_id))?
        {
            return Ok(seen.answer);
        }
        let empty = Vec::new();
        let pdus = body
            .get("pdus")
            .and_then(JsonValue::as_array)
            .unwrap_or(&empty);
        let edus = body
            .get("edus")
            .and_then(JsonValue::as_array)
            .unwrap_or(&empty);
        if pdus.len() > MAX_TXN_PDUS || edus.len() > MAX_TXN_EDUS {
            return Err(Error::bad_json(format!(
                "A transaction carries at most {MAX_TXN_PDUS} PDUs and {MAX_TXN_EDUS} EDUs."
            )));
        }
        // Parsing and signature checks of all PDUs side by side, then each
        // placed in order under its room's lock. A prev event that comes
        // earlier in the same transaction is placed first: no gap to ask
        // the origin about.
        let coming: std::sync::Arc<std::collections::HashMap<String, usize>> = std::sync::Arc::new(
            pdus.iter()
                .enumerate()
                .filter_map(|(i, raw)| {
                    let room_id = raw.get("room_id")?.as_str()?;
                    let record = self.rooms.room(room_id).ok()??;
                    let (_, rules) = crate::rooms::send::version_rules(&record.version).ok()?;
                    Some((super::incoming::parse::event_id_of(raw, &rules)?, i))
                })
                .collect(),
        );
        let mut checks = tokio::task::JoinSet::new();
        for (i, raw) in pdus.iter().enumerate() {
            let services = self.clone();
            let origin = origin.to_owned();
            let raw = raw.clone();
            let coming = coming.clone();
            checks.spawn(async move {
                let earlier = |id: &str| coming.get(id).is_some_and(|&at| at < i);
                (i, services.check_pdu(&origin, &raw, &earlier).await)
            });
        }
        let mut checked = Vec::with_capacity(pdus.len());
        while let Some(done) = checks.join_next().await {
            checked.push(done.map_err(Error::internal)?);
        }
        checked.sort_by_key(|(i, _)| *i);
        let mut results = serde_json::Map::new();
        for (_, (event_id, check)) in checked {
            let outcome = match check {
                Ok(check) => self.place_checked(origin, check).await,
                Err(e) => Err(e),
            };
            super::incoming::log_refusal(origin, event_id.as_deref(), &outcome);
            let Some(event_id) = event_id else {
                continue;
            };
            let result = match outcome {
                Ok(Outcome::Accepted | Outcome::AlreadyKnown | Outcome::SoftFailed(_)) => json!({}),
                Ok(Outcome::Rejected(reason)) => json!({ "error": reason }),
                Err(e) => json!({ "error": e.to_string() }),
            };
            results.insert(event_id, result);
        }
        for edu in edus {
            self.receive_edu(origin, edu).await;
        }
        let answer = json!({ "pdus": results });
        let mut batch = self.db.batch();
        let record = TxnRecord {
            answer,
            at: utils::now_ms(),
        };
        batch.put(&tables::FEDERATION_TXNS, (origin.as_str(), txn_id), &record)?;
        self.db.write(batch)?;
        Ok(record.answer)
    }

    /// Forgets the answers to transactions older than a day: a server
    /// retries within hours, and a very late retry is harmless (its events
    /// are known by id by then).
    pub(crate) fn prune_transactions(&self) -> Result<()> {
        let cutoff = utils::now_ms().saturating_sub(TXN_KEPT_MS);
        let mut batch = self.db.batch();
        let mut pruned = 0;
        for row in self
            .db
            .scan_prefix(&tables::FEDERATION_TXNS, &conduit_storage::KeyPrefix::new())?
        {
            let ((origin, txn_id), record) = row?;
            if record.at < cutoff {
                batch.delete(&tables::FEDERATION_TXNS, (origin.as_str(), txn_id.as_str()))?;
                pruned += 1;
            }
        }
        if pruned > 0 {
            self.db.write(batch)?;
            tracing::debug!(pruned, "forgot old federation transactions");
        }
        Ok(())
    }

    /// `GET /make_join/{roomId}/{userId}`: a join template for a user of
    /// `origin`, if the room lets them in.
    pub fn make_join(
        &self,
        origin: &ServerName,
        room_id: &str,
        user_id: &UserId,
        versions: &[String],
    ) -> Result<JsonValue> {
        self.membership_template(origin, room_id, user_id, versions, "join")
    }

    /// `PUT /send_join/{roomId}/{eventId}`: takes a signed join of a user of
    /// `origin`, and answers with the room's state before it and the auth
    /// chain of that state.
    pub async fn send_join(
        &self,
        origin: &ServerName,
        room_id: &str,
        event_id: &str,
        raw: &JsonValue,
    ) -> Result<JsonValue> {
        let taken = self
            .take_membership(origin, room_id, event_id, raw, "join")
            .await?;
        let short = taken.short;
        let state = self.state_before(short)?;
        let state_events: Vec<ShortEventId> = state.values().copied().collect();
        let auth_chain = self.auth_chain(&state_events)?;
        let servers: BTreeSet<OwnedServerName> = self
            .servers_in_state(&*self.state_after(short)?)?
            .into_iter()
            .chain(std::iter::once(self.config.server_name.clone()))
            .collect();
        let mut answer = json!({
            "origin": self.config.server_name,
            "state": self.federation_pdus(&state_events)?,
            "auth_chain": self.federation_pdus(&auth_chain)?,
            "members_omitted": false,
            "servers_in_room": servers,
        });
        if let Some(event) = taken.countersigned {
            answer["event"] = serde_json::to_value(event).map_err(Error::internal)?;
        }
        Ok(answer)
    }

    /// Every event reachable from `events` through auth events, without
    /// `events` themselves unless reached.
    pub fn auth_chain(&self, events: &[ShortEventId]) -> Result<Vec<ShortEventId>> {
        let mut seen: HashSet<ShortEventId> = HashSet::new();
        let mut todo: Vec<ShortEventId> = events.to_vec();
        while let Some(next) = todo.pop() {
            let Some(pdu) = self.rooms.pdu(next, &self.short_ids)? else {
                continue;
            };
            for &auth in &pdu.auth_events {
                if seen.insert(auth) {
                    todo.push(auth);
                }
            }
        }
        let mut chain: Vec<ShortEventId> = seen.into_iter().collect();
        chain.sort_unstable();
        Ok(chain)
    }

    /// Events as federation carries them.
    fn federation_pdus(&self, events: &[ShortEventId]) -> Result<Vec<JsonValue>> {
        let mut out = Vec::with_capacity(events.len());
        for &short in events {
            if let Some(pdu) = self.rooms.pdu(short, &self.short_ids)? {
                out.push(self.federation_pdu_json(&pdu));
            }
        }
        Ok(out)
    }

    /// Whether `server` may see `pdu`: it had a member in the room then,
    /// or the room's history was world-readable (or shared, and it is in
    /// the room now).
    pub fn server_can_see(&self, server: &ServerName, pdu: &Pdu) -> Result<bool> {
        let state = self.state_before(pdu.short)?;
        let mut visibility = "shared".to_owned();
        if let Some(event) = self.state_event(&state, "m.room.history_visibility", "")?
            && let Some(v) = event
                .content
                .get("history_visibility")
                .and_then(JsonValue::as_str)
        {
            visibility = v.to_owned();
        }
        if visibility == "world_readable" {
            return Ok(true);
        }
        // The servers of each state are cached by snapshot: a page of
        // events costs lookups, not a walk over the members per event.
        let meta = self.rooms.meta(pdu.short)?;
        let before = meta.as_ref().and_then(|m| m.state_before);
        let room = meta.map_or(0, |m| m.room);
        if self.servers_seeing_snapshot(room, before)?.contains(server) {
            return Ok(true);
        }
        // The event a server's own join is checked with is its to see.
        if pdu.state_key.as_deref().and_then(super::user_server) == Some(server) {
            return Ok(true);
        }
        if visibility == "shared"
            && let Some(room) = self.rooms.room(&super::room_id_of(pdu))?
        {
            return Ok(self.servers_in_room(&room)?.contains(server));
        }
        Ok(false)
    }

    /// An event `origin` asked for by id, if it may see it.
    fn visible_event(&self, origin: &ServerName, event_id: &str) -> Result<Pdu> {
        let not_found = || Error::not_found("No such event, or you may not see it.");
        let pdu = self
            .rooms
            .pdu_by_id(event_id, &self.short_ids)?
            .ok_or_else(not_found)?;
        if self.is_rejected(pdu.short)? || !self.server_can_see(origin, &pdu)? {
            return Err(not_found());
        }
        Ok(pdu)
    }

    /// `GET /event/{eventId}`.
    pub fn event_for_server(&self, origin: &ServerName, event_id: &str) -> Result<JsonValue> {
        let pdu = self.visible_event(origin, event_id)?;
        Ok(json!({
            "origin": self.config.server_name,
            "origin_server_ts": utils::now_ms(),
            "pdus": [self.federation_pdu_json(&pdu)],
        }))
    }

    /// `GET /state/{roomId}` and `/state_ids/{roomId}`: the state before an
    /// event and its auth chain, whole or as ids.
    pub fn state_for_server(
        &self,
        origin: &ServerName,
        room_id: &str,
        event_id: &str,
        ids_only: bool,
    ) -> Result<JsonValue> {
        self.served_room(room_id, origin)?;
        let pdu = self.visible_event(origin, event_id)?;
        if super::room_id_of(&pdu) != room_id {
            return Err(Error::not_found("The event is not in this room."));
        }
        let state = self.state_before(pdu.short)?;
        let events: Vec<ShortEventId> = state.values().copied().collect();
        let chain = self.auth_chain(&events)?;
        if ids_only {
            let ids = |list: &[ShortEventId]| -> Result<Vec<String>> {
                list.iter()
                    .filter_map(|&s| self.short_ids.event_id(s).transpose())
                    .collect()
            };
            return Ok(json!({ "pdu_ids": ids(&events)?, "auth_chain_ids": ids(&chain)? }));
        }
        Ok(json!({
            "pdus": self.federation_pdus(&events)?,
            "auth_chain": self.federation_pdus(&chain)?,
        }))
    }

    /// `GET /event_auth/{roomId}/{eventId}`.
    pub fn event_auth_for_server(
        &self,
        origin: &ServerName,
        room_id: &str,
        event_id: &str,
    ) -> Result<JsonValue> {
        self.served_room(room_id, origin)?;
        let pdu = self.visible_event(origin, event_id)?;
        let chain = self.auth_chain(&[pdu.short])?;
        Ok(json!({ "auth_chain": self.federation_pdus(&chain)? }))
    }

    /// `POST /get_missing_events/{roomId}`: events before `latest` back to
    /// `earliest`, walking prev events, oldest first.
    pub fn missing_events_for_server(
        &self,
        origin: &ServerName,
        room_id: &str,
        earliest: &[String],
        latest: &[String],
        limit: usize,
        min_depth: u64,
    ) -> Result<JsonValue> {
        self.served_room(room_id, origin)?;
        let stop: HashSet<ShortEventId> = earliest
            .iter()
            .filter_map(|id| self.short_ids.event_short(id).ok().flatten())
            .collect();
        let starts: Vec<ShortEventId> = latest
            .iter()
            .filter_map(|id| self.short_ids.event_short(id).ok().flatten())
            .collect();
        let mut found = Vec::new();
        let mut seen: HashSet<ShortEventId> = starts.iter().copied().collect();
        let mut todo: VecDeque<ShortEventId> = VecDeque::new();
        for &start in &starts {
            if let Some(pdu) = self.rooms.pdu(start, &self.short_ids)? {
                todo.extend(pdu.prev_events.iter().copied());
            }
        }
        let limit = limit.clamp(1, MAX_PAGE);
        while let Some(next) = todo.pop_front() {
            if found.len() >= limit {
                break;
            }
            if stop.contains(&next) || !seen.insert(next) {
                continue;
            }
            let Some(pdu) = self.rooms.pdu(next, &self.short_ids)? else {
                continue;
            };
            if pdu.depth < min_depth || super::room_id_of(&pdu) != room_id {
                continue;
            }
            if !self.server_can_see(origin, &pdu)? {
                continue;
            }
            todo.extend(pdu.prev_events.iter().copied());
            found.push(pdu);
        }
        found.sort_by_key(|p| p.depth);
        let events: Vec<JsonValue> = found.iter().map(|p| self.federation_pdu_json(p)).collect();
        Ok(json!({ "events": events }))
    }

    /// `GET /backfill/{roomId}?v=...&limit=`: the events `v` and those
    /// before them, newest first.
    pub fn backfill_for_server(
        &self,
        origin: &ServerName,
        room_id: &str,
        from: &[String],
        limit: usize,
    ) -> Result<JsonValue> {
        self.served_room(room_id, origin)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let mut todo: VecDeque<ShortEventId> = from
            .iter()
            .filter_map(|id| self.short_ids.event_short(id).ok().flatten())
            .collect();
        let mut seen: HashSet<ShortEventId> = HashSet::new();
        let mut found: Vec<Pdu> = Vec::new();
        while let Some(next) = todo.pop_front() {
            if found.len() >= limit {
                break;
            }
            if !seen.insert(next) {
                continue;
            }
            let Some(pdu) = self.rooms.pdu(next, &self.short_ids)? else {
                continue;
            };
            if super::room_id_of(&pdu) != room_id || !self.server_can_see(origin, &pdu)? {
                continue;
            }
            todo.extend(pdu.prev_events.iter().copied());
            found.push(pdu);
        }
        found.sort_by_key(|p| std::cmp::Reverse(p.depth));
        let pdus: Vec<JsonValue> = found.iter().map(|p| self.federation_pdu_json(p)).collect();
        Ok(json!({
            "origin": self.config.server_name,
            "origin_server_ts": utils::now_ms(),
            "pdus": pdus,
        }))
    }

    /// `GET /timestamp_to_event/{roomId}?ts=&dir=`: the event closest to
    /// `ts` that `origin` may see.
    pub fn timestamp_for_server(
        &self,
        origin: &ServerName,
        room_id: &str,
        ts: u64,
        forward: bool,
    ) -> Result<JsonValue> {
        let room = self.served_room(room_id, origin)?;
        let pdu = self
            .event_at_timestamp(&room.record, ts, forward, |pdu| {
                self.server_can_see(origin, pdu)
            })?
            .ok_or_else(|| Error::not_found("No event in that direction from that time."))?;
        Ok(json!({ "event_id": pdu.event_id, "origin_server_ts": pdu.origin_server_ts }))
    }

    /// `GET /query/profile?user_id=&field=`.
    pub fn profile_for_server(&self, user_id: &UserId, field: Option<&str>) -> Result<JsonValue> {
        if user_id.server_name() != self.config.server_name || !self.users.exists(user_id)? {
            return Err(Error::not_found("No such user on this server."));
        }
        let mut answer = serde_json::Map::new();
        for name in ["displayname", "avatar_url"] {
            if field.is_some_and(|f| f != name) {
                continue;
            }
            if let Some(value) = self.users.profile_field(user_id, name)? {
                answer.insert(name.into(), value);
            }
        }
        Ok(JsonValue::Object(answer))
    }

    /// `GET /query/directory?room_alias=`: a local alias's room, and the
    /// servers in it.
    pub fn directory_for_server(&self, alias: &str) -> Result<JsonValue> {
        let room_id = self
            .alias(alias)?
            .ok_or_else(|| Error::not_found("No room has this alias on this server."))?;
        let mut servers: Vec<OwnedServerName> = vec![self.config.server_name.clone()];
        if let Some(room) = self.rooms.room(&room_id)? {
            servers.extend(self.servers_in_room(&room)?.iter().cloned());
        }
        Ok(json!({ "room_id": room_id, "servers": servers }))
    }
}
