//! Outliers: events stored without a place in the timeline (a join's room
//! state and auth chain, the state at a missing event, missing auth
//! events). Each is verified, then checked against its own auth events; one
//! that fails is stored as rejected, so whatever cites it fails too.

use std::collections::{HashMap, HashSet, VecDeque};

use conduit_state_res::{check_against_state, check_auth_events};
use serde_json::Value as JsonValue;

use super::{
    RoomContext,
    parse::{Parsed, parse_pdu},
};
use crate::{Error, Result, Services, rooms::pdu::Pdu, tables};

/// At most this many events are taken from one answer (a join's state and
/// auth chain of a very big room stays below it).
const MAX_OUTLIERS: usize = 200_000;

impl Services {
    /// Verifies and stores `raws` as outliers, each after the auth events it
    /// cites. Events already stored are skipped. Returns the ids now stored
    /// and not rejected.
    pub(crate) async fn store_outliers(
        &self,
        room: &RoomContext,
        raws: &[JsonValue],
    ) -> Result<HashSet<String>> {
        let mut pending: Vec<Parsed> = Vec::new();
        let mut seen = HashSet::new();
        let mut accepted = HashSet::new();
        for raw in raws.iter().take(MAX_OUTLIERS) {
            let mut parsed = match parse_pdu(raw, &room.rules) {
                Ok(parsed) => parsed,
                Err(e) => {
                    tracing::info!(room_id = room.room_id, "outlier refused: {e}");
                    continue;
                }
            };
            if !seen.insert(parsed.event_id.clone()) {
                continue;
            }
            if let Err(e) = super::check_room_of(&parsed, room) {
                tracing::info!(event_id = parsed.event_id, "outlier refused: {e}");
                continue;
            }
            if self.event_is_stored(&parsed.event_id)? {
                if !self.is_rejected_id(&parsed.event_id)? {
                    accepted.insert(parsed.event_id);
                }
                continue;
            }
            if let Err(e) = self.verify_pdu(&mut parsed, &room.rules).await {
                tracing::info!(event_id = parsed.event_id, "outlier refused: {e}");
                continue;
            }
            pending.push(parsed);
        }
        // Auth events come before what they authorise: a topological order
        // (Kahn's), linear in the events and their references whatever
        // depths the sender claims. Events in a cycle are never ready.
        let index: HashMap<&str, usize> = pending
            .iter()
            .enumerate()
            .map(|(i, p)| (p.event_id.as_str(), i))
            .collect();
        let mut blocking = vec![0usize; pending.len()];
        let mut unblocks: Vec<Vec<usize>> = vec![Vec::new(); pending.len()];
        // From v12 the create event is no auth event of anyone's, yet every
        // event is checked against it: it goes first.
        let create = pending
            .iter()
            .position(|p| p.text("type") == Some("m.room.create"))
            .map(|i| pending[i].event_id.clone());
        for (i, parsed) in pending.iter().enumerate() {
            let mut auth_events = parsed.references("auth_events");
            if let Some(create) = &create
                && room.version.room_id_is_create_event
            {
                auth_events.push(create.clone());
            }
            for auth in auth_events {
                if let Some(&j) = index.get(auth.as_str())
                    && j != i
                {
                    blocking[i] += 1;
                    unblocks[j].push(i);
                }
            }
        }
        let mut ready: VecDeque<usize> = (0..pending.len()).filter(|&i| blocking[i] == 0).collect();
        let mut done = 0;
        while let Some(i) = ready.pop_front() {
            done += 1;
            if self.store_outlier(room, &pending[i])? {
                accepted.insert(pending[i].event_id.clone());
            }
            for &next in &unblocks[i] {
                blocking[next] -= 1;
                if blocking[next] == 0 {
                    ready.push_back(next);
                }
            }
        }
        if done < pending.len() {
            tracing::info!(
                room_id = room.room_id,
                events = pending.len() - done,
                "outliers citing each other as auth events: refused"
            );
        }
        Ok(accepted)
    }

    /// Stores one outlier, rejected when its own auth events do not allow
    /// it. Whether it was accepted.
    fn store_outlier(&self, room: &RoomContext, parsed: &Parsed) -> Result<bool> {
        let pdu = self.pdu_from_parsed(parsed)?;
        let verdict = self.check_against_auth_events(room, &pdu)?;
        let mut batch = self.db.batch();
        batch.put(&tables::PDUS, pdu.short, &pdu.json)?;
        if let Err(reason) = &verdict {
            tracing::info!(event_id = pdu.event_id, "outlier rejected: {reason}");
            batch.put(&tables::REJECTED_EVENTS, pdu.short, reason)?;
        }
        self.db.write(batch)?;
        Ok(verdict.is_ok())
    }

    pub(crate) fn pdu_from_parsed(&self, parsed: &Parsed) -> Result<Pdu> {
        let short = self.short_ids.get_or_create_event_short(&parsed.event_id)?;
        Pdu::from_json(short, parsed.stored_json()?, &self.short_ids)
    }

    /// Rules 1 to 11 against the event's own auth events: the inner
    /// `Err` says why it is refused.
    pub(crate) fn check_against_auth_events(
        &self,
        room: &RoomContext,
        pdu: &Pdu,
    ) -> Result<Result<(), String>> {
        let mut auth = Vec::with_capacity(pdu.auth_events.len());
        for &short in &pdu.auth_events {
            match self.rooms.pdu(short, &self.short_ids)? {
                Some(event) if self.is_rejected(short)? => {
                    return Ok(Err(format!(
                        "its auth event {} was rejected",
                        event.event_id
                    )));
                }
                Some(event) => auth.push(event),
                None => return Ok(Err("an auth event is missing".into())),
            }
        }
        let create = self.create_event_of(room)?;
        if let Err(rejection) = check_auth_events(room.version, pdu, &auth, create.as_ref()) {
            return Ok(Err(rejection.to_string()));
        }
        let lookup = |kind: &str, key: &str| {
            if kind == "m.room.create" && key.is_empty() && create.is_some() {
                return create.clone();
            }
            auth.iter()
                .find(|a| a.kind == kind && a.state_key.as_deref() == Some(key))
                .cloned()
        };
        Ok(check_against_state(room.version, pdu, &lookup).map_err(|r| r.to_string()))
    }

    /// The room's create event, when room ids name it (v12): it is not
    /// among the auth events there. Before v12 it is found among them.
    pub(crate) fn create_event_of(&self, room: &RoomContext) -> Result<Option<Pdu>> {
        if !room.version.room_id_is_create_event {
            return Ok(None);
        }
        let create_id = format!("${}", room.room_id.trim_start_matches('!'));
        self.rooms.pdu_by_id(&create_id, &self.short_ids)
    }

    pub fn is_rejected(&self, short: u64) -> Result<bool> {
        Ok(self.db.contains(&tables::REJECTED_EVENTS, short)?)
    }

    fn is_rejected_id(&self, event_id: &str) -> Result<bool> {
        match self.short_ids.event_short(event_id)? {
            Some(short) => self.is_rejected(short),
            None => Ok(false),
        }
    }

    /// Fetches the auth chain of `event_id` from `origin` and stores it.
    pub(crate) async fn fetch_auth_chain(
        &self,
        origin: &ruma::ServerName,
        room: &RoomContext,
        event_id: &str,
    ) -> Result<()> {
        let path = format!(
            "/_matrix/federation/v1/event_auth/{}/{}",
            urlencode(&room.room_id),
            urlencode(event_id)
        );
        let answer = self
            .federation_request(origin, http::Method::GET, &path, None, 64 << 20)
            .await
            .map_err(|e| e.into_client_error(origin))?;
        let chain = answer
            .get("auth_chain")
            .and_then(JsonValue::as_array)
            .ok_or_else(|| Error::bad_json("event_auth answer without auth_chain"))?;
        self.store_outliers(room, chain).await?;
        Ok(())
    }
}

/// Percent-encodes a path segment (room and event ids carry `!`, `$`, `:`).
pub fn urlencode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
