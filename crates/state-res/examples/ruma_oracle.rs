//! ruma's state resolution as an oracle for the black-box tests: reads
//! `{"room_version", "events": [PDUs with "event_id"], "state_sets":
//! [[event ids]]}` on stdin and prints the resolved state as
//! `[[type, state_key, event_id], ...]`. The big-room test asks it what
//! a fork in the fake federation's room must resolve to, and checks that
//! the server under test agrees. ruma is a dev-dependency only: this
//! program is never part of the server.

use std::{
    collections::{HashMap, HashSet},
    io::Read,
    sync::Arc,
};

use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId,
    RoomVersionId, UInt, UserId, events::TimelineEventType, state_res as oracle,
};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct Input {
    room_version: String,
    events: Vec<Box<RawValue>>,
    state_sets: Vec<Vec<OwnedEventId>>,
}

#[derive(Deserialize)]
struct Fields {
    event_id: OwnedEventId,
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    #[serde(rename = "type")]
    kind: String,
    state_key: Option<String>,
    content: Box<RawValue>,
    origin_server_ts: u64,
    #[serde(default)]
    prev_events: Vec<OwnedEventId>,
    #[serde(default)]
    auth_events: Vec<OwnedEventId>,
    redacts: Option<OwnedEventId>,
}

#[derive(Clone)]
struct Pdu(Arc<(Fields, TimelineEventType)>);

impl oracle::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &OwnedEventId {
        &self.0.0.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.0.0.room_id.as_deref()
    }
    fn sender(&self) -> &UserId {
        &self.0.0.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        MilliSecondsSinceUnixEpoch(UInt::new(self.0.0.origin_server_ts).unwrap_or_default())
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.0.1
    }
    fn content(&self) -> &RawValue {
        &self.0.0.content
    }
    fn state_key(&self) -> Option<&str> {
        self.0.0.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &OwnedEventId> + '_> {
        Box::new(self.0.0.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &OwnedEventId> + '_> {
        Box::new(self.0.0.auth_events.iter())
    }
    fn redacts(&self) -> Option<&OwnedEventId> {
        self.0.0.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        false
    }
}

fn main() {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .expect("stdin is text");
    let input: Input = serde_json::from_str(&text).expect("input as documented");
    let rules = RoomVersionId::try_from(input.room_version.as_str())
        .ok()
        .and_then(|v| v.rules())
        .expect("a known room version");
    let events: HashMap<OwnedEventId, Pdu> = input
        .events
        .iter()
        .map(|raw| {
            let fields: Fields = serde_json::from_str(raw.get()).expect("a PDU");
            let kind = TimelineEventType::from(fields.kind.as_str());
            (fields.event_id.clone(), Pdu(Arc::new((fields, kind))))
        })
        .collect();
    let auth_chain = |start: &OwnedEventId| {
        let mut seen = HashSet::new();
        let mut todo: Vec<OwnedEventId> = events[start].0.0.auth_events.clone();
        while let Some(id) = todo.pop() {
            if let Some(event) = events.get(&id)
                && seen.insert(id)
            {
                todo.extend(event.0.0.auth_events.iter().cloned());
            }
        }
        seen
    };
    let maps: Vec<oracle::StateMap<OwnedEventId>> = input
        .state_sets
        .iter()
        .map(|set| {
            set.iter()
                .map(|id| {
                    let fields = &events[id].0.0;
                    let key = fields.state_key.clone().expect("state events only");
                    ((fields.kind.as_str().into(), key), id.clone())
                })
                .collect()
        })
        .collect();
    let chains = input
        .state_sets
        .iter()
        .map(|set| set.iter().flat_map(&auth_chain).collect())
        .collect();
    let fetch = |id: &EventId| events.get(id).cloned();
    // Room v12's conflicted subgraph: events on an auth path between two
    // conflicted events, found the slow, obvious way.
    let subgraph = |conflicted: &oracle::StateMap<Vec<OwnedEventId>>| {
        let targets: HashSet<&OwnedEventId> = conflicted.values().flatten().collect();
        let reaches = |from: &OwnedEventId| {
            targets.contains(from) || auth_chain(from).iter().any(|id| targets.contains(id))
        };
        let mut found = HashSet::new();
        for start in &targets {
            for id in auth_chain(start) {
                if reaches(&id) {
                    found.insert(id);
                }
            }
            found.insert((*start).clone());
        }
        Some(found.into_iter().collect())
    };
    let state_res = rules.state_res.v2_rules().expect("state resolution v2");
    let resolved = oracle::resolve(
        &rules.authorization,
        state_res,
        maps.iter(),
        chains,
        fetch,
        subgraph,
    )
    .expect("ruma resolves the state");
    let out: Vec<(String, String, String)> = resolved
        .into_iter()
        .map(|((kind, key), id)| (kind.to_string(), key, id.to_string()))
        .collect();
    println!("{}", serde_json::to_string(&out).expect("JSON"));
}
