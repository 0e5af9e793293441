//! Federation: talking to other homeservers.
//!
//! - `discovery`: server name -> address and `Host`;
//! - `client`: signed outbound requests; `request_auth`: inbound ones checked;
//! - `keys`: other servers' signing keys, and this server as a notary;
//! - `incoming/`: the steps a received PDU goes through before it is stored;
//! - `join`, `invite`, `knock` (with `handshake`, the make_/send_ steps):
//!   membership in rooms on other servers;
//! - `serve`: what other servers may ask of this one (events, state, joins),
//!   `templates` the membership templates it hands out;
//! - `queries`: aliases and profiles asked of other servers for clients;
//! - `backfill`: history from before we joined, for `/messages`;
//! - `sender`: the persistent outgoing queue; `edu`: typing, receipts, presence.

pub mod backfill;
pub mod client;
pub mod discovery;
pub mod edu;
mod handshake;
pub mod incoming;
pub mod invite;
pub mod join;
pub mod join_status;
pub mod keys;
pub mod knock;
pub mod queries;
pub mod reachability;
pub mod request_auth;
pub mod sender;
pub mod serve;
pub mod templates;
pub mod x_matrix;

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use conduit_state_res::StateMap;
use ruma::{OwnedServerName, ServerName};
use serde_json::Value as JsonValue;

use crate::{
    Config, Result, Services,
    rooms::{pdu::Pdu, timeline::RoomRecord},
};

/// The federation state the services keep.
pub struct Federation {
    /// The HTTP clients and server discovery, made on the first outbound
    /// request: a server nobody federates with keeps neither the TLS roots
    /// nor a resolver in memory.
    transport: std::sync::OnceLock<Transport>,
    verify_certificates: bool,
    pub(crate) key_fetches: keys::KeyFetches,
    pub sender: sender::Sender,
    /// Remote joins in progress and the last ones finished.
    pub joins: join_status::JoinStatus,
    pub(crate) timeout: Duration,
    /// The servers joined to a room, by state snapshot (snapshots never
    /// change): every event sent and every typing notice asks.
    /// (snapshot, invited members too) -> servers.
    servers_by_snapshot: std::sync::Mutex<HashMap<(u64, bool), Servers>>,
}

pub(crate) struct Transport {
    pub client: reqwest::Client,
    pub discovery: Arc<discovery::Discovery>,
}

/// A set of servers, shared.
pub type Servers = Arc<BTreeSet<OwnedServerName>>;

/// Snapshots whose servers are kept before the cache starts over.
const SERVERS_CACHED: usize = 1024;

impl Federation {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            transport: std::sync::OnceLock::new(),
            verify_certificates: config.federation_verify_certificates,
            key_fetches: keys::KeyFetches::default(),
            sender: sender::Sender::default(),
            timeout: Duration::from_secs(config.federation_timeout),
            servers_by_snapshot: std::sync::Mutex::default(),
            joins: join_status::JoinStatus::default(),
        }
    }

    /// The clients and discovery, built on first use.
    pub(crate) fn transport(&self) -> Result<&Transport, reqwest::Error> {
        if let Some(transport) = self.transport.get() {
            return Ok(transport);
        }
        // `/.well-known` is fetched without the SRV overrides.
        let plain = client::build_client(self.verify_certificates, None)?;
        let discovery = Arc::new(discovery::Discovery::new(plain));
        let client = client::build_client(
            self.verify_certificates,
            Some(Arc::new(discovery::SrvAwareResolver(discovery.clone()))),
        )?;
        // Two first requests at once may both build: one is kept.
        Ok(self
            .transport
            .get_or_init(|| Transport { client, discovery }))
    }
}

/// Whether a room version names events by the `event_id` field (1 and 2)
/// rather than by their reference hash.
pub fn has_event_id_field(version: &str) -> bool {
    matches!(version, "1" | "2")
}

impl Services {
    /// A stored PDU as it goes over federation: without the local
    /// `event_id` (room versions 3 and later name events by their hash) and
    /// without `unsigned`.
    pub fn federation_pdu_json(&self, pdu: &Pdu) -> JsonValue {
        let mut json = pdu.json.clone();
        if let Some(object) = json.as_object_mut() {
            object.remove("unsigned");
            let room = self.rooms.room(&room_id_of(pdu)).ok().flatten();
            if !room.is_some_and(|r| has_event_id_field(&r.version)) {
                object.remove("event_id");
            }
        }
        json
    }

    /// The servers with a joined member in `state`, this one excepted.
    pub fn servers_in_state(&self, state: &StateMap) -> Result<BTreeSet<OwnedServerName>> {
        self.member_servers(state, &["join"])
    }

    /// The servers with a member of one of `memberships` in `state`, this
    /// one excepted.
    fn member_servers(
        &self,
        state: &StateMap,
        memberships: &[&str],
    ) -> Result<BTreeSet<OwnedServerName>> {
        let mut servers = BTreeSet::new();
        for (&key, &event) in state {
            let (kind, state_key) = self.short_ids.state_key(key)?;
            if kind != "m.room.member" {
                continue;
            }
            let Ok(user) = ruma::UserId::parse(state_key.as_str()) else {
                continue;
            };
            if user.server_name() == self.config.server_name || servers.contains(user.server_name())
            {
                continue;
            }
            if let Some(pdu) = self.rooms.pdu(event, &self.short_ids)?
                && memberships.contains(&crate::rooms::membership::membership_of(&pdu))
            {
                servers.insert(user.server_name().to_owned());
            }
        }
        Ok(servers)
    }

    /// The servers joined to `room` at a stored state snapshot, this one
    /// excepted.
    pub fn servers_in_snapshot(&self, room: u64, snapshot: Option<u64>) -> Result<Servers> {
        self.cached_member_servers(room, snapshot, false, None)
    }

    /// The servers with a joined or invited member in a stored state
    /// snapshot: those that may see an event with that state before it.
    pub fn servers_seeing_snapshot(&self, room: u64, snapshot: Option<u64>) -> Result<Servers> {
        self.cached_member_servers(room, snapshot, true, None)
    }

    fn cached_member_servers(
        &self,
        room: u64,
        snapshot: Option<u64>,
        invited_too: bool,
        pending: Option<&Pdu>,
    ) -> Result<Servers> {
        let Some(id) = snapshot else {
            return Ok(Arc::default());
        };
        let key = (id, invited_too);
        if let Some(servers) = crate::utils::locked(&self.federation.servers_by_snapshot).get(&key)
        {
            return Ok(servers.clone());
        }
        let summary = self.member_summary_with(room, id, pending)?;
        let servers: Servers = Arc::new(
            summary
                .servers(invited_too)
                .filter(|s| *s != self.config.server_name)
                .map(ToOwned::to_owned)
                .collect(),
        );
        let mut cache = crate::utils::locked(&self.federation.servers_by_snapshot);
        if cache.len() >= SERVERS_CACHED {
            cache.clear();
        }
        cache.insert(key, servers.clone());
        Ok(servers)
    }

    /// The servers joined to a room now, this one excepted.
    pub fn servers_in_room(&self, room: &RoomRecord) -> Result<Servers> {
        self.servers_in_snapshot(room.short, self.rooms.head(room.short)?.state)
    }

    /// Where a new event of a room goes: the servers joined after it (in
    /// state snapshot `state_after`), and for a member event the target's
    /// server too (an invite, a kick).
    pub(crate) fn destinations_for(
        &self,
        room: u64,
        state_after: Option<u64>,
        pdu: &Pdu,
    ) -> Result<Vec<OwnedServerName>> {
        // The state after the event holds the event, not stored yet.
        let mut servers =
            (*self.cached_member_servers(room, state_after, false, Some(pdu))?).clone();
        if pdu.kind == "m.room.member"
            && let Some(target) = pdu.state_key.as_deref()
            && let Ok(user) = ruma::UserId::parse(target)
            && user.server_name() != self.config.server_name
        {
            servers.insert(user.server_name().to_owned());
        }
        Ok(servers
            .into_iter()
            .filter(|s| self.config.federates_with(s))
            .collect())
    }

    /// The servers to ask about a room we learn of through `via`, in order,
    /// without duplicates and without this one.
    pub fn candidate_servers(
        &self,
        room_id: &str,
        via: &[OwnedServerName],
    ) -> Vec<OwnedServerName> {
        let mut servers: Vec<OwnedServerName> = Vec::new();
        let from_id = room_id
            .split_once(':')
            .and_then(|(_, s)| OwnedServerName::try_from(s).ok());
        for server in via.iter().cloned().chain(from_id) {
            if server != self.config.server_name
                && !servers.contains(&server)
                && self.config.federates_with(&server)
            {
                servers.push(server);
            }
        }
        servers
    }
}

/// Our event with the signatures other servers added to the copy they sent
/// back (an invite's invitee, a restricted join's authorising server): only
/// signatures are taken from their copy, never any other field.
pub fn with_their_signatures(ours: &JsonValue, theirs: &JsonValue) -> JsonValue {
    let mut merged = ours.clone();
    let our_server = ours
        .get("sender")
        .and_then(JsonValue::as_str)
        .and_then(user_server)
        .map(|s| s.as_str().to_owned());
    if let (Some(signatures), Some(added)) = (
        merged
            .get_mut("signatures")
            .and_then(JsonValue::as_object_mut),
        theirs.get("signatures").and_then(JsonValue::as_object),
    ) {
        for (server, keys) in added {
            if Some(server.as_str()) != our_server.as_deref() && keys.is_object() {
                signatures.insert(server.clone(), keys.clone());
            }
        }
    }
    merged
}

/// The room of an event: its `room_id`, or for a v12 create event (which
/// has none) the id it names.
pub fn room_id_of(pdu: &Pdu) -> String {
    match &pdu.room_id {
        Some(room_id) => room_id.clone(),
        None => format!("!{}", pdu.event_id.trim_start_matches('$')),
    }
}

/// The server part of a user id, if it is a valid one.
pub fn user_server(user_id: &str) -> Option<&ServerName> {
    let (_, server) = user_id.split_once(':')?;
    <&ServerName>::try_from(server).ok()
}
