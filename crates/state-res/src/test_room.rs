//! A room simulator for tests: builds events with the right auth events and
//! prev events, checks them with the auth rules, and keeps the state.

use std::collections::BTreeMap;

use serde_json::{Value as JsonValue, json};

use crate::{
    auth::{auth_types_for_event, check_against_state, check_auth_events},
    event::{Event, ShortEventId, types},
    rejection::Rejection,
    room_version::RoomVersion,
};

#[derive(Clone, Debug)]
pub struct TestEvent {
    pub id: ShortEventId,
    pub event_id: String,
    pub room_id: Option<String>,
    pub kind: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub content: JsonValue,
    pub ts: u64,
    pub depth: u64,
    pub prev: Vec<ShortEventId>,
    pub auth: Vec<ShortEventId>,
    pub rejected: bool,
    pub redacts: Option<String>,
}

impl Event for TestEvent {
    fn short_id(&self) -> ShortEventId {
        self.id
    }
    fn event_id(&self) -> &str {
        &self.event_id
    }
    fn room_id(&self) -> Option<&str> {
        self.room_id.as_deref()
    }
    fn event_type(&self) -> &str {
        &self.kind
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn sender(&self) -> &str {
        &self.sender
    }
    fn content(&self) -> &JsonValue {
        &self.content
    }
    fn origin_server_ts(&self) -> u64 {
        self.ts
    }
    fn depth(&self) -> u64 {
        self.depth
    }
    fn prev_events(&self) -> &[ShortEventId] {
        &self.prev
    }
    fn auth_events(&self) -> &[ShortEventId] {
        &self.auth
    }
    fn rejected(&self) -> bool {
        self.rejected
    }
    fn redacts(&self) -> Option<&str> {
        self.redacts.as_deref()
    }
}

pub type StateMap = BTreeMap<(String, String), ShortEventId>;

/// A linear room: every accepted event follows the previous one.
pub struct TestRoom {
    pub version: &'static RoomVersion,
    pub room_id: String,
    pub events: BTreeMap<ShortEventId, TestEvent>,
    pub state: StateMap,
    pub last: Option<ShortEventId>,
    next_id: ShortEventId,
}

pub const ALICE: &str = "@alice:a.example";
pub const BOB: &str = "@bob:b.example";
pub const CAROL: &str = "@carol:a.example";
pub const EVE: &str = "@eve:e.example";

impl TestRoom {
    /// A room of `version` created by `creator`, who has joined; with
    /// `extra_create` merged into the create content.
    pub fn new(version: &str, creator: &str, extra_create: JsonValue) -> Self {
        let version = RoomVersion::from_id(version).expect("known version");
        let mut room = Self {
            version,
            room_id: "!room:a.example".into(),
            events: BTreeMap::new(),
            state: StateMap::new(),
            last: None,
            next_id: 1,
        };
        let mut content = json!({ "room_version": version.id });
        if version.creator_in_content {
            content["creator"] = json!(creator);
        }
        if let (JsonValue::Object(extra), JsonValue::Object(c)) = (extra_create, &mut content) {
            c.extend(extra);
        }
        let create = room.build(creator, types::CREATE, Some(""), content);
        if version.room_id_is_create_event {
            room.room_id = format!("!{}", &create.event_id[1..]);
        }
        room.accept(create.clone()).expect("create event");
        room.send(
            creator,
            types::MEMBER,
            Some(creator),
            json!({"membership": "join"}),
        )
        .expect("creator joins");
        room
    }

    /// A new event on top of the room, with auth events from the current state.
    pub fn build(
        &mut self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: JsonValue,
    ) -> TestEvent {
        let id = self.next_id;
        self.next_id += 1;
        let auth = auth_types_for_event(self.version, kind, sender, state_key, &content)
            .iter()
            .filter_map(|key| self.state.get(key).copied())
            .collect();
        let is_v12_create = kind == types::CREATE && self.version.room_id_is_create_event;
        TestEvent {
            id,
            event_id: format!("$event{id}"),
            room_id: (!is_v12_create).then(|| self.room_id.clone()),
            kind: kind.into(),
            state_key: state_key.map(Into::into),
            sender: sender.into(),
            content,
            ts: id * 1000,
            depth: id,
            prev: self.last.into_iter().collect(),
            auth,
            rejected: false,
            redacts: None,
        }
    }

    pub fn create_event(&self) -> &TestEvent {
        &self.events[&self.state[&(types::CREATE.to_owned(), String::new())]]
    }

    /// Runs the auth rules for `event` against the room as it is now.
    pub fn check(&self, event: &TestEvent) -> Result<(), Rejection> {
        let auth_events: Vec<TestEvent> = event
            .auth
            .iter()
            .map(|id| self.events[id].clone())
            .collect();
        let create = self
            .state
            .get(&(types::CREATE.to_owned(), String::new()))
            .map(|id| &self.events[id]);
        check_auth_events(self.version, event, &auth_events, create)?;
        let state = |kind: &str, key: &str| {
            self.state
                .get(&(kind.to_owned(), key.to_owned()))
                .map(|id| self.events[id].clone())
        };
        check_against_state(self.version, event, &state)
    }

    /// Checks and, when allowed, appends the event to the room.
    pub fn accept(&mut self, event: TestEvent) -> Result<TestEvent, Rejection> {
        self.check(&event)?;
        if let Some(key) = &event.state_key {
            self.state
                .insert((event.kind.clone(), key.clone()), event.id);
        }
        self.last = Some(event.id);
        self.events.insert(event.id, event.clone());
        Ok(event)
    }

    pub fn send(
        &mut self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: JsonValue,
    ) -> Result<TestEvent, Rejection> {
        let event = self.build(sender, kind, state_key, content);
        self.accept(event)
    }

    pub fn member(
        &mut self,
        sender: &str,
        target: &str,
        membership: &str,
    ) -> Result<TestEvent, Rejection> {
        self.send(
            sender,
            types::MEMBER,
            Some(target),
            json!({ "membership": membership }),
        )
    }

    pub fn state_event(
        &mut self,
        sender: &str,
        kind: &str,
        content: JsonValue,
    ) -> Result<TestEvent, Rejection> {
        self.send(sender, kind, Some(""), content)
    }
}
