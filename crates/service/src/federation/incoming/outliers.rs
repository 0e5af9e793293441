//! Outliers: events stored without a place in the timeline (a join's room
//! state and auth chain, the state at a missing event, missing auth
//! events). Each is verified, then checked against its own auth events; one
//! that fails is stored as rejected, so whatever cites it fails too.
//!
//! A big room's join brings tens of thousands of them at once, so the work
//! is done in bulk: the signing keys of every server named are fetched first
//! (many servers at once) and held in memory, events are parsed and
//! verified on every core with nothing but their text kept afterwards, short
//! ids are given in bulk, and the events are written a few thousand a batch.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    ops::Range,
    sync::Arc,
};

use conduit_state_res::{StateMap, check_against_state, check_auth_events};
use ruma::{OwnedServerName, ServerName, signatures::PublicKeyMap};
use serde::Deserialize;
use serde_json::{Value as JsonValue, value::RawValue};

use super::{
    RoomContext,
    parse::{Parsed, parse_pdu_text},
    verify::{key_time, signers, verify_with_keys},
};
use crate::{
    Error, Result, Services,
    federation::keys::KeyRing,
    rooms::{pdu::Pdu, short::ShortIds},
    tables, utils,
};

/// At most this many events are taken from one answer (a join's state and
/// auth chain of a very big room stays below it).
const MAX_OUTLIERS: usize = 200_000;
/// Events written per batch.
const WRITE_BATCH: usize = 4096;
/// Rounds of fetching the auth events an answer lacks, and how many a round.
const AUTH_FETCH_ROUNDS: usize = 4;
const MAX_FETCHED_AUTH: usize = 1000;
/// Events asked for at once while fetching them.
const PARALLEL_EVENT_FETCHES: usize = 16;

/// Events waiting for auth events (with their place among those given),
/// and the ids of those auth events.
type LeftOut = (Vec<(Option<usize>, Checked)>, HashSet<String>);

/// What became of each event given to [`Services::store_outliers`], in the
/// order given: `None` for one refused before it was stored (malformed,
/// another room's, a bad signature).
pub(crate) struct Outliers(pub Vec<Option<Outlier>>);

pub(crate) struct Outlier {
    pub short: u64,
    /// Stored and not rejected.
    pub accepted: bool,
    /// `(type, state_key)` of a state event.
    pub state_key: Option<(String, String)>,
}

impl Outliers {
    /// The state map of the accepted state events among the `range` of the
    /// events given.
    pub(crate) fn state(&self, ids: &ShortIds, range: Range<usize>) -> Result<StateMap> {
        // Events past `MAX_OUTLIERS` were left out.
        let end = range.end.min(self.0.len());
        let accepted: Vec<&Outlier> = self.0[range.start.min(end)..end]
            .iter()
            .flatten()
            .filter(|o| o.accepted)
            .collect();
        let keys = ids.get_or_create_state_key_shorts(
            accepted
                .iter()
                .filter_map(|o| o.state_key.as_ref())
                .map(|(kind, key)| (kind.as_str(), key.as_str())),
        )?;
        Ok(accepted
            .iter()
            .filter_map(|o| {
                let (kind, key) = o.state_key.as_ref()?;
                Some((keys[&(kind.as_str(), key.as_str())], o.short))
            })
            .collect())
    }

    /// How many of the events given were stored and not rejected.
    pub(crate) fn accepted_count(&self) -> usize {
        self.0.iter().flatten().filter(|o| o.accepted).count()
    }
}

/// The fields that say whose keys an event needs, read before the event is
/// parsed whole.
#[derive(Deserialize)]
struct SigningFields {
    #[serde(default)]
    sender: String,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    content: SigningContent,
    #[serde(default)]
    signatures: BTreeMap<String, BTreeMap<String, serde::de::IgnoredAny>>,
}

#[derive(Default, Deserialize)]
struct SigningContent {
    #[serde(default)]
    join_authorised_via_users_server: Option<String>,
}

/// The servers whose keys verify the event, with the key ids it names:
/// the sender's server, the event id's before room v3, a restricted join's
/// authorising server. What this misses is fetched when it is verified.
fn wanted_keys(raw: &RawValue) -> Vec<(OwnedServerName, Vec<String>)> {
    let Ok(fields) = serde_json::from_str::<SigningFields>(raw.get()) else {
        return Vec::new();
    };
    let server_of = |id: &str| id.split_once(':').map(|(_, server)| server.to_owned());
    [
        server_of(&fields.sender),
        fields.event_id.as_deref().and_then(server_of),
        fields
            .content
            .join_authorised_via_users_server
            .as_deref()
            .and_then(server_of),
    ]
    .into_iter()
    .flatten()
    .filter_map(|server| {
        let key_ids = fields.signatures.get(&server)?;
        let server = OwnedServerName::try_from(server).ok()?;
        Some((server, key_ids.keys().take(4).cloned().collect()))
    })
    .collect()
}

/// An event verified, kept as the text it will be stored as.
struct Checked {
    event_id: String,
    /// The JSON as stored (with `event_id`).
    text: String,
    auth_events: Vec<String>,
    prev_events: Vec<String>,
    is_create: bool,
}

/// Verification's answer for one event.
enum Verdict {
    Checked(Checked),
    /// The key ring lacks a key it needs: verified again, fetching.
    NeedsKeys(Box<Parsed>),
    Refused(String),
}

fn checked(parsed: &Parsed) -> Result<Checked> {
    Ok(Checked {
        event_id: parsed.event_id.clone(),
        text: serde_json::to_string(&parsed.stored_json()?).map_err(Error::internal)?,
        auth_events: parsed.references("auth_events"),
        prev_events: parsed.references("prev_events"),
        is_create: parsed.text("type") == Some("m.room.create"),
    })
}

/// Parses and verifies one event against the keys held.
fn verify_one(raw: &RawValue, room: &RoomContext, ring: &KeyRing) -> Verdict {
    let refused = |e: Error| Verdict::Refused(e.to_string());
    let mut parsed = match parse_pdu_text(raw.get(), &room.rules) {
        Ok(parsed) => parsed,
        Err(e) => return refused(e),
    };
    if let Err(e) = super::check_room_of(&parsed, room) {
        return refused(e);
    }
    let needed = match signers(&parsed, &room.rules) {
        Ok(needed) => needed,
        Err(e) => return refused(e),
    };
    let at = key_time(&parsed, &room.rules);
    let mut keys = PublicKeyMap::new();
    for (server, key_ids) in needed {
        let found = ring.keys_at(server.as_str(), &key_ids, at);
        if found.is_empty() {
            return Verdict::NeedsKeys(Box::new(parsed));
        }
        keys.insert(server.to_string(), found);
    }
    match verify_with_keys(&mut parsed, &room.rules, &keys).and_then(|_| checked(&parsed)) {
        Ok(checked) => Verdict::Checked(checked),
        Err(e) => refused(e),
    }
}

impl Services {
    /// Verifies and stores `raws` as outliers, each after the auth events it
    /// cites. Events already stored are not stored again. Says what became
    /// of each (see [`Outliers`]).
    pub(crate) async fn store_outliers(
        &self,
        origin: &ServerName,
        room: &RoomContext,
        mut raws: Vec<Box<RawValue>>,
    ) -> Result<Outliers> {
        if raws.len() > MAX_OUTLIERS {
            tracing::info!(
                room_id = room.room_id,
                events = raws.len(),
                "more outliers than {MAX_OUTLIERS} at once: the rest are left out"
            );
            raws.truncate(MAX_OUTLIERS);
        }
        let total = raws.len();
        let raws = Arc::new(raws);
        let indexes: Vec<usize> = (0..total).collect();

        // Keys first: every server named, many at once.
        let wanted_lists = {
            let raws = raws.clone();
            utils::parallel_map(indexes.clone(), move |i| wanted_keys(&raws[i])).await?
        };
        let mut wanted: BTreeMap<OwnedServerName, BTreeSet<String>> = BTreeMap::new();
        for (server, key_ids) in wanted_lists.into_iter().flatten() {
            wanted.entry(server).or_default().extend(key_ids);
        }
        let ring = Arc::new(self.key_ring(&wanted).await?);
        if total > 1000 {
            tracing::info!(
                room_id = room.room_id,
                events = total,
                servers = wanted.len(),
                "verifying events"
            );
        }

        // Parse and verify on every core.
        let context = Arc::new(room.clone());
        let verdicts = {
            let raws = raws.clone();
            utils::parallel_map(indexes, move |i| verify_one(&raws[i], &context, &ring)).await?
        };
        drop(raws);

        let mut outcomes: Vec<Option<Outlier>> = (0..total).map(|_| None).collect();
        let mut first_of: HashMap<String, usize> = HashMap::new();
        let mut duplicates: Vec<(usize, usize)> = Vec::new();
        let mut pending: Vec<(Option<usize>, Checked)> = Vec::new();
        for (i, verdict) in verdicts.into_iter().enumerate() {
            let checked = match verdict {
                Verdict::Checked(checked) => checked,
                Verdict::NeedsKeys(mut parsed) => {
                    match self.verify_pdu(&mut parsed, &room.rules).await {
                        Ok(_) => checked(&parsed)?,
                        Err(e) => {
                            tracing::info!(event_id = parsed.event_id, "outlier refused: {e}");
                            continue;
                        }
                    }
                }
                Verdict::Refused(reason) => {
                    tracing::info!(room_id = room.room_id, "outlier refused: {reason}");
                    continue;
                }
            };
            if let Some(&first) = first_of.get(&checked.event_id) {
                duplicates.push((i, first));
                continue;
            }
            first_of.insert(checked.event_id.clone(), i);
            if let Some(short) = self.short_ids.event_short(&checked.event_id)?
                && let Some(pdu) = self.rooms.pdu(short, &self.short_ids)?
            {
                outcomes[i] = Some(Outlier {
                    short,
                    accepted: !self.is_rejected(short)?,
                    state_key: pdu.state_key.clone().map(|key| (pdu.kind.clone(), key)),
                });
                continue;
            }
            pending.push((Some(i), checked));
        }

        // Events whose auth events the answer lacks wait for them to be
        // fetched from `origin`, a few rounds deep.
        let mut fetched = HashSet::new();
        for round in 0.. {
            let (left_out, missing) = self.store_checked(room, pending, &mut outcomes)?;
            if left_out.is_empty() {
                break;
            }
            let missing: Vec<String> = missing
                .into_iter()
                .filter(|id| fetched.insert(id.clone()))
                .take(MAX_FETCHED_AUTH)
                .collect();
            if round == AUTH_FETCH_ROUNDS || missing.is_empty() {
                tracing::info!(
                    room_id = room.room_id,
                    %origin,
                    events = left_out.len(),
                    "outliers left out: an auth event is missing"
                );
                break;
            }
            tracing::info!(
                room_id = room.room_id,
                %origin,
                missing = missing.len(),
                waiting = left_out.len(),
                "fetching missing auth events"
            );
            pending = left_out;
            pending.extend(
                self.fetch_checked(origin, room, &missing)
                    .await
                    .into_iter()
                    .map(|c| (None, c)),
            );
        }
        for (i, first) in duplicates {
            outcomes[i] = outcomes[first].as_ref().map(|o| Outlier {
                short: o.short,
                accepted: o.accepted,
                state_key: o.state_key.clone(),
            });
        }
        Ok(Outliers(outcomes))
    }

    /// Stores verified events in an order where auth events come before
    /// what they authorise, each checked against its own auth events.
    /// Returns the events left out because an auth event is neither among
    /// them nor stored, and the ids of those auth events.
    fn store_checked(
        &self,
        room: &RoomContext,
        pending: Vec<(Option<usize>, Checked)>,
        outcomes: &mut [Option<Outlier>],
    ) -> Result<LeftOut> {
        // A topological order (Kahn's), linear in the events and their
        // references whatever depths the sender claims. Events in a cycle
        // are never ready.
        let index: HashMap<&str, usize> = pending
            .iter()
            .enumerate()
            .map(|(i, (_, c))| (c.event_id.as_str(), i))
            .collect();
        let mut blocking = vec![0usize; pending.len()];
        let mut unblocks: Vec<Vec<usize>> = vec![Vec::new(); pending.len()];
        // From v12 the create event is no auth event of anyone's, yet every
        // event is checked against it: it goes first.
        let create = pending
            .iter()
            .position(|(_, c)| c.is_create)
            .filter(|_| room.version.room_id_is_create_event);
        for (i, (_, checked)) in pending.iter().enumerate() {
            let cited = checked
                .auth_events
                .iter()
                .filter_map(|auth| index.get(auth.as_str()).copied())
                .chain(create);
            for j in cited {
                if j != i {
                    blocking[i] += 1;
                    unblocks[j].push(i);
                }
            }
        }

        let shorts = self
            .short_ids
            .get_or_create_event_shorts(pending.iter().flat_map(|(_, c)| {
                std::iter::once(c.event_id.as_str())
                    .chain(c.auth_events.iter().map(String::as_str))
                    .chain(c.prev_events.iter().map(String::as_str))
            }))?;
        // Events others cite as auth events, held until the batch that
        // stores them is written (then read back from the database).
        let mut cited: HashMap<u64, (Pdu, bool)> = HashMap::new();
        let mut ready: VecDeque<usize> = (0..pending.len()).filter(|&i| blocking[i] == 0).collect();
        let mut done = 0;
        let mut batch = self.db.batch();
        let mut in_batch = 0;
        let mut absent = vec![false; pending.len()];
        let mut missing = HashSet::new();
        while let Some(i) = ready.pop_front() {
            done += 1;
            let (position, checked) = &pending[i];
            let short = shorts[checked.event_id.as_str()];
            let lacking: Vec<&String> = checked
                .auth_events
                .iter()
                .filter(|id| match index.get(id.as_str()) {
                    Some(&j) => absent[j],
                    None => !self.event_is_stored(id).unwrap_or(false),
                })
                .collect();
            if !lacking.is_empty() {
                absent[i] = true;
                missing.extend(
                    lacking
                        .into_iter()
                        .filter(|id| !index.contains_key(id.as_str()))
                        .cloned(),
                );
                for &next in &unblocks[i] {
                    blocking[next] -= 1;
                    if blocking[next] == 0 {
                        ready.push_back(next);
                    }
                }
                continue;
            }
            let json: JsonValue = serde_json::from_str(&checked.text).map_err(Error::internal)?;
            let pdu = Pdu::from_json(short, json, &self.short_ids)?;
            let verdict = self.check_against_auth_events_with(room, &pdu, &cited)?;
            batch.put(&tables::PDUS, short, &pdu.json)?;
            // A merge in the room later walks these events' auth chains.
            self.auth_events_cache.insert(short, &pdu.auth_events);
            if let Err(reason) = &verdict {
                tracing::info!(event_id = pdu.event_id, "outlier rejected: {reason}");
                batch.put(&tables::REJECTED_EVENTS, short, reason)?;
            }
            in_batch += 1;
            if in_batch == WRITE_BATCH {
                self.db
                    .write(std::mem::replace(&mut batch, self.db.batch()))?;
                in_batch = 0;
                // Written: later events read them from the database.
                cited.clear();
            }
            if let Some(position) = position {
                outcomes[*position] = Some(Outlier {
                    short,
                    accepted: verdict.is_ok(),
                    state_key: pdu.state_key.clone().map(|key| (pdu.kind.clone(), key)),
                });
            }
            if !unblocks[i].is_empty() {
                cited.insert(short, (pdu, verdict.is_err()));
            }
            for &next in &unblocks[i] {
                blocking[next] -= 1;
                if blocking[next] == 0 {
                    ready.push_back(next);
                }
            }
        }
        self.db.write(batch)?;
        if done < pending.len() {
            tracing::info!(
                room_id = room.room_id,
                events = pending.len() - done,
                "outliers citing each other as auth events: refused"
            );
        }
        let left_out = pending
            .into_iter()
            .zip(absent)
            .filter_map(|(pending, absent)| absent.then_some(pending))
            .collect();
        Ok((left_out, missing))
    }

    /// Fetches events by id from `origin` (a few at a time) and verifies
    /// them; those it cannot give or that fail are logged and left out.
    async fn fetch_checked(
        &self,
        origin: &ServerName,
        room: &RoomContext,
        event_ids: &[String],
    ) -> Vec<Checked> {
        let permits = tokio::sync::Semaphore::new(PARALLEL_EVENT_FETCHES);
        let fetches = event_ids.iter().map(|event_id| {
            let permits = &permits;
            async move {
                let _permit = permits.acquire().await.map_err(Error::internal)?;
                let path = format!("/_matrix/federation/v1/event/{}", urlencode(event_id));
                let answer = self.federation_events(origin, &path, 1 << 20).await?;
                let raw = answer
                    .pdus
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::bad_json("an /event answer without the event"))?;
                let mut parsed = parse_pdu_text(raw.get(), &room.rules)?;
                super::check_room_of(&parsed, room)?;
                if parsed.event_id != *event_id {
                    return Err(Error::bad_json("/event answered another event"));
                }
                self.verify_pdu(&mut parsed, &room.rules).await?;
                checked(&parsed)
            }
        });
        let mut found = Vec::new();
        for (outcome, event_id) in utils::join_all(fetches).await.into_iter().zip(event_ids) {
            match outcome {
                Ok(checked) => found.push(checked),
                Err(e) => tracing::info!(%origin, event_id, "missing auth event not had: {e}"),
            }
        }
        found
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
        self.check_against_auth_events_with(room, pdu, &HashMap::new())
    }

    /// [`check_against_auth_events`](Self::check_against_auth_events), the
    /// auth events looked up in `known` (with whether each was rejected)
    /// before the database: those of a batch not written yet.
    fn check_against_auth_events_with(
        &self,
        room: &RoomContext,
        pdu: &Pdu,
        known: &HashMap<u64, (Pdu, bool)>,
    ) -> Result<Result<(), String>> {
        let mut auth = Vec::with_capacity(pdu.auth_events.len());
        for &short in &pdu.auth_events {
            let found = match known.get(&short) {
                Some((event, rejected)) => Some((event.clone(), *rejected)),
                None => match self.rooms.pdu(short, &self.short_ids)? {
                    Some(event) => Some((event, self.is_rejected(short)?)),
                    None => None,
                },
            };
            match found {
                Some((event, true)) => {
                    return Ok(Err(format!(
                        "its auth event {} was rejected",
                        event.event_id
                    )));
                }
                Some((event, false)) => auth.push(event),
                None => return Ok(Err("an auth event is missing".into())),
            }
        }
        let create = match self.create_short_of(room)? {
            Some(short) if known.contains_key(&short) => Some(known[&short].0.clone()),
            _ => self.create_event_of(room)?,
        };
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
        match self.create_short_of(room)? {
            Some(short) => self.rooms.pdu(short, &self.short_ids),
            None => Ok(None),
        }
    }

    /// The short id of the create event a v12 room id names, if known.
    fn create_short_of(&self, room: &RoomContext) -> Result<Option<u64>> {
        if !room.version.room_id_is_create_event {
            return Ok(None);
        }
        let create_id = format!("${}", room.room_id.trim_start_matches('!'));
        self.short_ids.event_short(&create_id)
    }

    pub fn is_rejected(&self, short: u64) -> Result<bool> {
        Ok(self.db.contains(&tables::REJECTED_EVENTS, short)?)
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
        let answer: RawEvents = self.federation_events(origin, &path, 64 << 20).await?;
        self.store_outliers(origin, room, answer.auth_chain).await?;
        Ok(())
    }
}

/// The lists of events a federation answer carries, each event kept as
/// its text until it is checked (`send_join`, `/state`, `/event_auth`).
#[derive(Default, Deserialize)]
pub(crate) struct RawEvents {
    #[serde(default)]
    pub state: Vec<Box<RawValue>>,
    #[serde(default)]
    pub auth_chain: Vec<Box<RawValue>>,
    #[serde(default)]
    pub pdus: Vec<Box<RawValue>>,
    /// `send_join`'s copy of the join (signed by the resident server too).
    #[serde(default)]
    pub event: Option<JsonValue>,
}

impl Services {
    /// A federation GET whose answer is read as [`RawEvents`].
    pub(crate) async fn federation_events(
        &self,
        origin: &ruma::ServerName,
        path: &str,
        limit: usize,
    ) -> Result<RawEvents> {
        let bytes = self
            .federation_bytes(origin, http::Method::GET, path, None, limit, true)
            .await
            .map_err(|e| e.into_client_error(origin))?;
        parse_raw_events(origin, &bytes)
    }
}

/// Reads an answer's event lists; what is not JSON is the server's error.
pub(crate) fn parse_raw_events(origin: &ruma::ServerName, bytes: &[u8]) -> Result<RawEvents> {
    serde_json::from_slice(bytes).map_err(|e| {
        crate::federation::client::FedError::NotJson(e.to_string()).into_client_error(origin)
    })
}

/// Percent-encodes a path segment (room and event ids carry `!`, `$`, `:`).
pub fn urlencode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use conduit_storage::Database;

    use super::*;

    #[test]
    fn a_range_past_the_events_kept_is_cut_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path(), tables::ALL, 1 << 20).unwrap());
        let ids = ShortIds::new(db).unwrap();
        let member = Outlier {
            short: 7,
            accepted: true,
            state_key: Some(("m.room.member".into(), "@a:x".into())),
        };
        let outliers = Outliers(vec![Some(member), None]);
        let state = outliers.state(&ids, 0..250_000).unwrap();
        assert_eq!(state.values().copied().collect::<Vec<_>>(), vec![7]);
        assert!(outliers.state(&ids, 5..9).unwrap().is_empty());
    }
}
