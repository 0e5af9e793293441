//! State resolution v2 (room versions 2–11) and v2.1 (room version 12),
//! step by step as the spec describes them. All work is on short ids:
//! events are fetched from the caller's [`EventSource`] only to read what a
//! step needs.

use std::{
    cmp::{Ordering, Reverse},
    collections::{BTreeMap, BinaryHeap},
};

use crate::{
    auth::check_against_state,
    event::{Event, ShortEventId, types},
    id_hash::{IdMap, IdSet},
    power_levels::{Creators, Power, PowerLevels, user_power},
    room_version::{RoomVersion, StateResAlgorithm},
};

/// The caller's short id for an `(event type, state key)` pair.
pub type ShortStateKey = u64;

/// A room state: for each state key, the event that holds it.
pub type StateMap = BTreeMap<ShortStateKey, ShortEventId>;

/// Where resolution reads events and state keys from.
pub trait EventSource {
    type Event: Event;

    /// The event with this short id, if the caller has it. Events it lacks
    /// are left out of resolution.
    fn event(&self, id: ShortEventId) -> Option<Self::Event>;

    /// The short id of a state key, if it was ever given one. The caller
    /// gives one to every state event it stores, so every event that takes
    /// part in resolution has one.
    fn state_key_id(&self, event_type: &str, state_key: &str) -> Option<ShortStateKey>;

    /// Calls `f` with the auth events of `id`, if the event is known. The
    /// default reads the event; a caller that keeps auth events apart
    /// overrides it, and every auth-chain walk uses it.
    fn with_auth_events(&self, id: ShortEventId, f: &mut dyn FnMut(&[ShortEventId])) {
        if let Some(event) = self.event(id) {
            f(event.auth_events());
        }
    }

    /// Adds the auth chain of `id` (every event reachable through
    /// `auth_events`, without `id` itself) to `chain`.
    fn extend_auth_chain(&self, id: ShortEventId, chain: &mut IdSet) {
        let mut todo = vec![id];
        while let Some(next) = todo.pop() {
            self.with_auth_events(next, &mut |auth_events| {
                for &auth in auth_events {
                    if chain.insert(auth) {
                        todo.push(auth);
                    }
                }
            });
        }
    }
}

/// Resolves several room states into one, with the room version's algorithm.
pub fn resolve<S: EventSource>(
    version: &RoomVersion,
    state_sets: &[StateMap],
    source: &S,
) -> StateMap {
    match version.state_res {
        StateResAlgorithm::V1 => crate::resolve_v1::resolve_v1(version, state_sets, source),
        StateResAlgorithm::V2 | StateResAlgorithm::V2_1 => resolve_v2(version, state_sets, source),
    }
}

fn resolve_v2<S: EventSource>(
    version: &RoomVersion,
    state_sets: &[StateMap],
    source: &S,
) -> StateMap {
    if state_sets.len() <= 1 {
        return state_sets.first().cloned().unwrap_or_default();
    }
    let (unconflicted, conflicted) = split_conflicted(state_sets);
    if conflicted.is_empty() {
        return unconflicted;
    }

    // The full conflicted set: conflicted events, the auth difference, and
    // for v2.1 the conflicted state subgraph; only events we have.
    let mut full: IdSet = conflicted.iter().copied().collect();
    full.extend(auth_difference(state_sets, source));
    if version.state_res == StateResAlgorithm::V2_1 {
        full.extend(conflicted_subgraph(&conflicted, source));
    }
    let mut events: IdMap<S::Event> = IdMap::default();
    for &id in &full {
        if let Some(event) = source.event(id) {
            events.insert(id, event);
        }
    }
    full.retain(|id| events.contains_key(id));

    // Step 1: power events and their auth ancestors within the full set.
    // Like Synapse and ruma, an ancestor counts only when it is reached
    // through events of the full conflicted set: the spec's "auth chain of
    // P which also belong to the full conflicted set" read as they read it,
    // so that servers agree.
    let mut power: IdSet = IdSet::default();
    let mut todo: Vec<ShortEventId> = events
        .iter()
        .filter(|(_, event)| is_power_event(*event))
        .map(|(&id, _)| id)
        .collect();
    while let Some(id) = todo.pop() {
        if power.insert(id) {
            let auth = events[&id].auth_events();
            todo.extend(
                auth.iter()
                    .filter(|a| events.contains_key(a) && !power.contains(a)),
            );
        }
    }
    let create = find_create(state_sets, source);
    let sorted_power =
        reverse_topological_power_sort(version, &power, &events, create.as_ref(), source);

    // Step 2: iterative auth checks, from the unconflicted state (v2) or empty (v2.1).
    let start = match version.state_res {
        StateResAlgorithm::V2_1 => StateMap::new(),
        _ => unconflicted.clone(),
    };
    let partial = iterative_auth_checks(
        version,
        start,
        &sorted_power,
        &events,
        create.as_ref(),
        source,
    );

    // Step 3: the rest, in mainline order of the resolved power levels.
    let rest: Vec<ShortEventId> = full
        .iter()
        .copied()
        .filter(|id| !power.contains(id))
        .collect();
    let pl_key = source.state_key_id(types::POWER_LEVELS, "");
    let mainline_head = pl_key.and_then(|key| partial.get(&key).copied());
    let sorted_rest = mainline_sort(&rest, mainline_head, &events, source);

    // Step 4 and 5.
    let mut resolved = iterative_auth_checks(
        version,
        partial,
        &sorted_rest,
        &events,
        create.as_ref(),
        source,
    );
    resolved.extend(unconflicted);
    resolved
}

/// The unconflicted state map, and every event of a state key the sets
/// disagree on (including keys missing from some sets).
pub fn split_conflicted(state_sets: &[StateMap]) -> (StateMap, Vec<ShortEventId>) {
    let mut by_key: BTreeMap<ShortStateKey, Vec<ShortEventId>> = BTreeMap::new();
    for set in state_sets {
        for (&key, &id) in set {
            by_key.entry(key).or_default().push(id);
        }
    }
    let mut unconflicted = StateMap::new();
    let mut conflicted = Vec::new();
    for (key, mut ids) in by_key {
        let everywhere = ids.len() == state_sets.len();
        ids.sort_unstable();
        ids.dedup();
        if everywhere && ids.len() == 1 {
            unconflicted.insert(key, ids[0]);
        } else {
            conflicted.extend(ids);
        }
    }
    conflicted.sort_unstable();
    conflicted.dedup();
    (unconflicted, conflicted)
}

/// Events in some but not all of the state sets' full auth chains.
fn auth_difference<S: EventSource>(state_sets: &[StateMap], source: &S) -> IdSet {
    let chains: Vec<IdSet> = state_sets
        .iter()
        .map(|set| {
            let mut chain = IdSet::default();
            for &id in set.values() {
                source.extend_auth_chain(id, &mut chain);
            }
            chain
        })
        .collect();
    let mut difference = IdSet::default();
    for chain in &chains {
        for id in chain {
            if !chains.iter().all(|other| other.contains(id)) {
                difference.insert(*id);
            }
        }
    }
    difference
}

/// v2.1: every event on an `auth_events` path from one conflicted event to
/// another, endpoints included.
pub(crate) fn conflicted_subgraph<S: EventSource>(
    conflicted: &[ShortEventId],
    source: &S,
) -> IdSet {
    let targets: IdSet = conflicted.iter().copied().collect();
    // reaches[x]: x leads (through auth events) to a conflicted event, or is one.
    let mut reaches: IdMap<bool> = IdMap::default();
    let mut subgraph = IdSet::default();
    for &start in conflicted {
        // Depth-first, post-order, so each event is decided after its auth events.
        let mut stack = vec![(start, false)];
        while let Some((id, expanded)) = stack.pop() {
            if reaches.contains_key(&id) && !expanded {
                continue;
            }
            let Some(event) = source.event(id) else {
                reaches.insert(id, targets.contains(&id));
                continue;
            };
            if expanded {
                let below = event
                    .auth_events()
                    .iter()
                    .any(|a| reaches.get(a).copied().unwrap_or(false));
                reaches.insert(id, below || targets.contains(&id));
            } else {
                reaches.insert(id, targets.contains(&id)); // provisional, breaks cycles
                stack.push((id, true));
                for &auth in event.auth_events() {
                    if !reaches.contains_key(&auth) {
                        stack.push((auth, false));
                    }
                }
            }
        }
    }
    // Everything reached from a conflicted event that leads to one is on a path.
    for &start in conflicted {
        let mut todo = vec![start];
        let mut seen = IdSet::default();
        while let Some(id) = todo.pop() {
            if !seen.insert(id) || !reaches.get(&id).copied().unwrap_or(false) {
                continue;
            }
            subgraph.insert(id);
            if let Some(event) = source.event(id) {
                todo.extend_from_slice(event.auth_events());
            }
        }
    }
    subgraph
}

/// The short id of an event's own `(type, state_key)`; `None` for messages.
pub(crate) fn state_key_of<S: EventSource>(event: &S::Event, source: &S) -> Option<ShortStateKey> {
    event
        .state_key()
        .and_then(|sk| source.state_key_id(event.event_type(), sk))
}

/// Power events: power levels, join rules, kicks and bans, and (as Synapse
/// and ruma count it) the create event.
fn is_power_event<E: Event>(event: &E) -> bool {
    match event.event_type() {
        types::POWER_LEVELS | types::JOIN_RULES | types::CREATE => event.state_key() == Some(""),
        types::MEMBER => {
            matches!(event.membership(), Some("leave" | "ban"))
                && event.state_key() != Some(event.sender())
        }
        _ => false,
    }
}

fn find_create<S: EventSource>(state_sets: &[StateMap], source: &S) -> Option<S::Event> {
    let key = source.state_key_id(types::CREATE, "")?;
    state_sets
        .iter()
        .find_map(|set| set.get(&key))
        .and_then(|&id| source.event(id))
}

/// The sender's power as its own auth events grant it, for the power sort.
fn sender_power<S: EventSource>(
    version: &RoomVersion,
    event: &S::Event,
    create: Option<&S::Event>,
    source: &S,
) -> Power {
    let mut levels_event = None;
    let mut create_event = None;
    for &id in event.auth_events() {
        if let Some(auth) = source.event(id) {
            if auth.is_state(types::POWER_LEVELS, "") {
                levels_event = Some(auth);
            } else if auth.is_state(types::CREATE, "") {
                create_event = Some(auth);
            }
        }
    }
    let create = create_event.as_ref().or(create);
    let creators = Creators::from_create(create, version);
    let levels = PowerLevels::from_event(levels_event.as_ref(), version);
    user_power(event.sender(), levels_event.is_some(), &levels, &creators)
}

/// The spec's "reverse topological power ordering": Kahn's algorithm over
/// the auth DAG, earliest first, ties broken by higher sender power, then
/// earlier `origin_server_ts`, then smaller event id.
fn reverse_topological_power_sort<S: EventSource>(
    version: &RoomVersion,
    set: &IdSet,
    events: &IdMap<S::Event>,
    create: Option<&S::Event>,
    source: &S,
) -> Vec<ShortEventId> {
    struct Candidate<'a> {
        power: Power,
        ts: u64,
        event_id: &'a str,
        id: ShortEventId,
    }
    impl Candidate<'_> {
        fn key(&self) -> (Reverse<Power>, u64, &str) {
            (Reverse(self.power), self.ts, self.event_id)
        }
    }
    impl PartialEq for Candidate<'_> {
        fn eq(&self, other: &Self) -> bool {
            self.key() == other.key()
        }
    }
    impl Eq for Candidate<'_> {}
    impl PartialOrd for Candidate<'_> {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Candidate<'_> {
        fn cmp(&self, other: &Self) -> Ordering {
            // BinaryHeap pops the greatest: invert so the smallest key comes out.
            other.key().cmp(&self.key())
        }
    }

    // Edges point from an event to the events that cite it as an auth event.
    let mut waiting_on: IdMap<usize> = IdMap::default();
    let mut cited_by: IdMap<Vec<ShortEventId>> = IdMap::default();
    for &id in set {
        let Some(event) = events.get(&id) else {
            continue;
        };
        let in_set: Vec<_> = event
            .auth_events()
            .iter()
            .filter(|a| set.contains(a))
            .collect();
        waiting_on.insert(id, in_set.len());
        for &auth in in_set {
            cited_by.entry(auth).or_default().push(id);
        }
    }
    let candidate = |id: ShortEventId| {
        let event = &events[&id];
        Candidate {
            power: sender_power(version, event, create, source),
            ts: event.origin_server_ts(),
            event_id: event.event_id(),
            id,
        }
    };
    let mut heap: BinaryHeap<Candidate<'_>> = waiting_on
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(&id, _)| candidate(id))
        .collect();
    let mut sorted = Vec::with_capacity(waiting_on.len());
    while let Some(next) = heap.pop() {
        sorted.push(next.id);
        for &child in cited_by
            .get(&next.id)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let n = waiting_on.get_mut(&child).expect("child is in the set");
            *n -= 1;
            if *n == 0 {
                heap.push(candidate(child));
            }
        }
    }
    sorted
}

/// Mainline ordering: by how far back the event's power levels chain meets
/// the mainline of the resolved power levels (further back first), then
/// `origin_server_ts`, then event id.
fn mainline_sort<S: EventSource>(
    rest: &[ShortEventId],
    head: Option<ShortEventId>,
    events: &IdMap<S::Event>,
    source: &S,
) -> Vec<ShortEventId> {
    let power_levels_of = |event: &S::Event| {
        event.auth_events().iter().copied().find(|&a| {
            source
                .event(a)
                .is_some_and(|e| e.is_state(types::POWER_LEVELS, ""))
        })
    };
    let mut mainline: IdMap<usize> = IdMap::default();
    let mut cursor = head;
    let mut index = 0;
    while let Some(id) = cursor {
        mainline.insert(id, index);
        index += 1;
        cursor = source.event(id).and_then(|e| power_levels_of(&e));
    }

    let position = |event: &S::Event| -> usize {
        let mut cursor = power_levels_of(event);
        while let Some(id) = cursor {
            if let Some(&i) = mainline.get(&id) {
                return i;
            }
            cursor = source.event(id).and_then(|e| power_levels_of(&e));
        }
        usize::MAX
    };
    let mut keyed: Vec<(Reverse<usize>, u64, &str, ShortEventId)> = rest
        .iter()
        .filter_map(|id| events.get(id).map(|e| (id, e)))
        .map(|(&id, event)| {
            (
                Reverse(position(event)),
                event.origin_server_ts(),
                event.event_id(),
                id,
            )
        })
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, _, _, id)| id).collect()
}

/// Applies each event in order to the state when the auth rules allow it
/// there; a state key the state lacks is taken from the event's own
/// (accepted) auth events. In v12 the create event is no auth event: the
/// room id names it, so it is always at hand as `create`.
fn iterative_auth_checks<S: EventSource>(
    version: &RoomVersion,
    mut state: StateMap,
    order: &[ShortEventId],
    events: &IdMap<S::Event>,
    create: Option<&S::Event>,
    source: &S,
) -> StateMap {
    for &id in order {
        let Some(event) = events.get(&id) else {
            continue;
        };
        let Some(key) = state_key_of(event, source) else {
            continue;
        };
        let auth_events: Vec<S::Event> = event
            .auth_events()
            .iter()
            .filter_map(|&a| source.event(a))
            .filter(|a| !a.rejected())
            .collect();
        let lookup = |event_type: &str, state_key: &str| -> Option<S::Event> {
            let from_state = source
                .state_key_id(event_type, state_key)
                .and_then(|k| state.get(&k))
                .and_then(|&id| source.event(id));
            from_state
                .or_else(|| {
                    auth_events
                        .iter()
                        .find(|a| a.is_state(event_type, state_key))
                        .map(|a| source.event(a.short_id()))?
                })
                .or_else(|| {
                    let implied = version.room_id_is_create_event
                        && event_type == types::CREATE
                        && state_key.is_empty();
                    implied.then(|| create.map(|c| source.event(c.short_id())))??
                })
        };
        if check_against_state(version, event, &lookup).is_ok() {
            state.insert(key, id);
        }
    }
    state
}
