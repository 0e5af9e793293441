//! A room DAG builder whose events speak both this crate's `Event` trait
//! and ruma's, so the same input runs through both resolvers. Shared by the
//! property test (tests/oracle.rs) and the benchmark (benches/resolve.rs).
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use conduit_state_res::{
    Event, EventSource, RoomVersion, ShortEventId, ShortStateKey, StateMap, auth_types_for_event,
    resolve,
};
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt,
    UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res as oracle,
};
use serde_json::{Value as JsonValue, value::RawValue};

pub const USERS: [&str; 4] = ["@alice:a.org", "@bob:b.org", "@carol:a.org", "@dan:d.org"];

/// An event, cheap to clone (as a server's cached events are): both
/// resolvers fetch events by value.
#[derive(Clone, Debug)]
pub struct Pdu(Arc<PduData>);

impl std::ops::Deref for Pdu {
    type Target = PduData;

    fn deref(&self) -> &PduData {
        &self.0
    }
}

#[derive(Debug)]
pub struct PduData {
    pub short: ShortEventId,
    pub id: OwnedEventId,
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub kind: TimelineEventType,
    pub kind_str: String,
    pub state_key: Option<String>,
    pub content: JsonValue,
    pub raw_content: Box<RawValue>,
    pub ts: u64,
    pub prev: Vec<ShortEventId>,
    pub auth: Vec<ShortEventId>,
    pub prev_ids: Vec<OwnedEventId>,
    pub auth_ids: Vec<OwnedEventId>,
}

impl Event for Pdu {
    fn short_id(&self) -> ShortEventId {
        self.short
    }
    fn event_id(&self) -> &str {
        self.id.as_str()
    }
    fn room_id(&self) -> Option<&str> {
        self.room_id.as_deref().map(RoomId::as_str)
    }
    fn event_type(&self) -> &str {
        &self.kind_str
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn sender(&self) -> &str {
        self.sender.as_str()
    }
    fn content(&self) -> &JsonValue {
        &self.content
    }
    fn origin_server_ts(&self) -> u64 {
        self.ts
    }
    fn depth(&self) -> u64 {
        self.short
    }
    fn prev_events(&self) -> &[ShortEventId] {
        &self.prev
    }
    fn auth_events(&self) -> &[ShortEventId] {
        &self.auth
    }
    fn redacts(&self) -> Option<&str> {
        None
    }
    fn rejected(&self) -> bool {
        false
    }
}

impl oracle::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &OwnedEventId {
        &self.id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        MilliSecondsSinceUnixEpoch(UInt::new(self.ts).unwrap())
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawValue {
        &self.raw_content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &OwnedEventId> + '_> {
        Box::new(self.prev_ids.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &OwnedEventId> + '_> {
        Box::new(self.auth_ids.iter())
    }
    fn redacts(&self) -> Option<&OwnedEventId> {
        None
    }
    fn rejected(&self) -> bool {
        false
    }
}

pub struct Room {
    pub version: &'static RoomVersion,
    pub rules: RoomVersionRules,
    pub room_id: Option<OwnedRoomId>,
    pub events: Vec<Pdu>,
    pub by_id: HashMap<OwnedEventId, ShortEventId>,
    pub keys: BTreeMap<(String, String), ShortStateKey>,
    pub state_after: Vec<StateMap>,
    pub merges: usize,
}

impl EventSource for Room {
    type Event = Pdu;

    fn event(&self, id: ShortEventId) -> Option<Pdu> {
        self.events.get(id as usize).cloned()
    }

    fn state_key_id(&self, event_type: &str, state_key: &str) -> Option<ShortStateKey> {
        self.keys
            .get(&(event_type.to_owned(), state_key.to_owned()))
            .copied()
    }
}

pub fn rules_for(version: &str) -> RoomVersionRules {
    match version {
        "2" => RoomVersionRules::V2,
        "3" => RoomVersionRules::V3,
        "4" => RoomVersionRules::V4,
        "5" => RoomVersionRules::V5,
        "6" => RoomVersionRules::V6,
        "7" => RoomVersionRules::V7,
        "8" => RoomVersionRules::V8,
        "9" => RoomVersionRules::V9,
        "10" => RoomVersionRules::V10,
        "11" => RoomVersionRules::V11,
        "12" => RoomVersionRules::V12,
        other => panic!("no ruma rules for {other}"),
    }
}

impl Room {
    pub fn new(version: &str) -> Self {
        Self {
            version: RoomVersion::from_id(version).unwrap(),
            rules: rules_for(version),
            room_id: None,
            events: Vec::new(),
            by_id: HashMap::new(),
            keys: BTreeMap::new(),
            state_after: Vec::new(),
            merges: 0,
        }
    }

    pub fn to_ruma_state(&self, state: &StateMap) -> oracle::StateMap<OwnedEventId> {
        let names: HashMap<ShortStateKey, &(String, String)> =
            self.keys.iter().map(|(k, v)| (*v, k)).collect();
        state
            .iter()
            .map(|(key, id)| {
                let (kind, state_key) = names[key];
                (
                    (StateEventType::from(kind.as_str()), state_key.clone()),
                    self.events[*id as usize].id.clone(),
                )
            })
            .collect()
    }

    pub fn readable(&self, state: &StateMap) -> BTreeMap<(String, String), String> {
        self.to_ruma_state(state)
            .into_iter()
            .map(|((kind, key), id)| ((kind.to_string(), key), id.to_string()))
            .collect()
    }

    /// The state before an event with these prev events; at a merge, both
    /// resolvers run and must agree.
    pub fn state_before(&mut self, prev: &[ShortEventId]) -> StateMap {
        match prev {
            [] => StateMap::new(),
            [one] => self.state_after[*one as usize].clone(),
            many => {
                let sets: Vec<StateMap> = many
                    .iter()
                    .map(|p| self.state_after[*p as usize].clone())
                    .collect();
                let ours = resolve(self.version, &sets, &*self);
                let theirs = self.oracle_resolve(&sets);
                if self.readable(&ours) != theirs {
                    for e in &self.events {
                        eprintln!(
                            "{} {} {} {:?} {} prev={:?} auth={:?}",
                            e.short, e.kind_str, e.sender, e.state_key, e.content, e.prev, e.auth
                        );
                    }
                    for set in &sets {
                        eprintln!("set: {:?}", self.readable(set));
                    }
                }
                assert_eq!(
                    self.readable(&ours),
                    theirs,
                    "room version {}: resolutions differ at merge of {:?}",
                    self.version.id,
                    many
                );
                self.merges += 1;
                ours
            }
        }
    }

    /// The full auth chain of each state set, as ruma takes them.
    pub fn ruma_auth_chains(
        &self,
        sets: &[StateMap],
    ) -> Vec<oracle::utils::event_id_set::EventIdSet<OwnedEventId>> {
        sets.iter()
            .map(|set| {
                let mut chain = conduit_state_res::IdSet::default();
                for id in set.values() {
                    self.extend_auth_chain(*id, &mut chain);
                }
                chain
                    .into_iter()
                    .map(|id| self.events[id as usize].id.clone())
                    .collect()
            })
            .collect()
    }

    pub fn oracle_resolve(&self, sets: &[StateMap]) -> BTreeMap<(String, String), String> {
        let maps: Vec<_> = sets.iter().map(|s| self.to_ruma_state(s)).collect();
        let chains = self.ruma_auth_chains(sets);
        let fetch = |id: &EventId| self.by_id.get(id).map(|s| self.events[*s as usize].clone());
        let subgraph = |conflicted: &oracle::StateMap<Vec<OwnedEventId>>| {
            let ids: Vec<ShortEventId> = conflicted
                .values()
                .flatten()
                .map(|id| self.by_id[id])
                .collect();
            Some(
                self.brute_force_subgraph(&ids)
                    .into_iter()
                    .map(|s| self.events[s as usize].id.clone())
                    .collect(),
            )
        };
        let state_res = self.rules.state_res.v2_rules().expect("v2 rules");
        let resolved = oracle::resolve(
            &self.rules.authorization,
            state_res,
            maps.iter(),
            chains,
            fetch,
            subgraph,
        )
        .expect("ruma resolves");
        resolved
            .into_iter()
            .map(|((kind, key), id)| ((kind.to_string(), key), id.to_string()))
            .collect()
    }

    /// The conflicted state subgraph the slow, obvious way: events reachable
    /// from a conflicted event that can reach a conflicted event.
    pub fn brute_force_subgraph(&self, conflicted: &[ShortEventId]) -> HashSet<ShortEventId> {
        let targets: HashSet<_> = conflicted.iter().copied().collect();
        let reaches_target = |start: ShortEventId| {
            let mut todo = vec![start];
            let mut seen = HashSet::new();
            while let Some(id) = todo.pop() {
                if targets.contains(&id) {
                    return true;
                }
                if seen.insert(id) {
                    todo.extend(self.events[id as usize].auth.iter().copied());
                }
            }
            false
        };
        let mut result = HashSet::new();
        for &start in conflicted {
            let mut todo = vec![start];
            let mut seen = HashSet::new();
            while let Some(id) = todo.pop() {
                if !seen.insert(id) {
                    continue;
                }
                if id == start || reaches_target(id) {
                    result.insert(id);
                }
                todo.extend(self.events[id as usize].auth.iter().copied());
            }
        }
        result
    }

    pub fn add(
        &mut self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: JsonValue,
        prev: Vec<ShortEventId>,
    ) {
        let before = self.state_before(&prev);
        let (_, after) = self.push(sender, kind, state_key, content, prev, before);
        self.state_after.push(after);
    }

    /// Appends an event whose state before is `before`; returns its short id
    /// and the state after it. Keeps no per-event state (for big rooms).
    pub fn push(
        &mut self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: JsonValue,
        prev: Vec<ShortEventId>,
        mut before: StateMap,
    ) -> (ShortEventId, StateMap) {
        let short = self.events.len() as ShortEventId;
        let auth: Vec<ShortEventId> =
            auth_types_for_event(self.version, kind, sender, state_key, &content)
                .into_iter()
                .filter_map(|key| self.keys.get(&key).and_then(|k| before.get(k)).copied())
                .collect();
        let is_create = kind == "m.room.create";
        let id: OwnedEventId = if is_create && self.version.room_id_is_create_event {
            EventId::parse("$createAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap()
        } else {
            EventId::parse(format!("$e{short:06}:a.org")).unwrap()
        };
        if is_create {
            self.room_id = Some(if self.version.room_id_is_create_event {
                RoomId::parse(format!("!{}", &id.as_str()[1..])).unwrap()
            } else {
                RoomId::parse("!room:a.org").unwrap()
            });
        }
        let room_id = if is_create && self.version.room_id_is_create_event {
            None
        } else {
            self.room_id.clone()
        };
        let pdu = PduData {
            short,
            id: id.clone(),
            room_id,
            sender: UserId::parse(sender).unwrap(),
            kind: TimelineEventType::from(kind),
            kind_str: kind.to_owned(),
            state_key: state_key.map(str::to_owned),
            raw_content: serde_json::value::to_raw_value(&content).unwrap(),
            content,
            ts: 1_000 + short,
            prev_ids: prev
                .iter()
                .map(|p| self.events[*p as usize].id.clone())
                .collect(),
            auth_ids: auth
                .iter()
                .map(|a| self.events[*a as usize].id.clone())
                .collect(),
            prev,
            auth,
        };
        if let Some(key) = state_key {
            let next = self.keys.len() as ShortStateKey;
            let short_key = *self
                .keys
                .entry((kind.to_owned(), key.to_owned()))
                .or_insert(next);
            before.insert(short_key, short);
        }
        self.by_id.insert(id, short);
        self.events.push(Pdu(Arc::new(pdu)));
        (short, before)
    }
}
