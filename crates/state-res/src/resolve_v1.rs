//! State resolution for room version 1, as the spec of that version
//! describes it (known to reset state; later versions replaced it).

use std::collections::BTreeMap;

use sha1::{Digest, Sha1};

use crate::{
    auth::check_against_state,
    event::{Event, ShortEventId, types},
    resolve::{EventSource, ShortStateKey, StateMap, state_key_of},
    room_version::RoomVersion,
};

pub(crate) fn resolve_v1<S: EventSource>(
    version: &RoomVersion,
    state_sets: &[StateMap],
    source: &S,
) -> StateMap {
    let (mut resolved, conflicted) = split_union(state_sets);
    // The conflicting events, grouped by state key.
    let mut by_key: BTreeMap<ShortStateKey, Vec<S::Event>> = BTreeMap::new();
    for id in conflicted {
        let Some(event) = source.event(id) else {
            continue;
        };
        let Some(key) = state_key_of(&event, source) else {
            continue;
        };
        by_key.entry(key).or_default().push(event);
    }

    // Power levels, then join rules, then memberships: each in ascending
    // depth (then descending SHA-1 of the id), the first taken as it is,
    // the next ones while the auth rules allow them.
    for kind in [types::POWER_LEVELS, types::JOIN_RULES, types::MEMBER] {
        let keys: Vec<ShortStateKey> = by_key
            .iter()
            .filter(|(_, events)| events.first().is_some_and(|e| e.is_type(kind)))
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            let mut events = by_key.remove(&key).unwrap_or_default();
            events.sort_by_key(|e| (e.depth(), std::cmp::Reverse(sha1_of(e))));
            let mut events = events.into_iter();
            if let Some(first) = events.next() {
                resolved.insert(key, first.short_id());
            }
            for event in events {
                if !allowed(version, &event, &resolved, source) {
                    break;
                }
                resolved.insert(key, event.short_id());
            }
        }
    }

    // Everything else: the highest depth, then lowest SHA-1, that passes auth.
    for (key, mut events) in by_key {
        events.sort_by_key(|e| (std::cmp::Reverse(e.depth()), sha1_of(e)));
        if let Some(winner) = events
            .into_iter()
            .find(|e| allowed(version, e, &resolved, source))
        {
            resolved.insert(key, winner.short_id());
        }
    }
    resolved
}

/// v1's split: the union of the states, where only keys with different
/// events conflict (a key missing from some states is no conflict, unlike v2).
fn split_union(state_sets: &[StateMap]) -> (StateMap, Vec<ShortEventId>) {
    let mut by_key: BTreeMap<ShortStateKey, Vec<ShortEventId>> = BTreeMap::new();
    for set in state_sets {
        for (&key, &id) in set {
            let ids = by_key.entry(key).or_default();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    let mut union = StateMap::new();
    let mut conflicted = Vec::new();
    for (key, ids) in by_key {
        match ids.as_slice() {
            [one] => {
                union.insert(key, *one);
            }
            many => conflicted.extend_from_slice(many),
        }
    }
    (union, conflicted)
}

fn sha1_of<E: Event>(event: &E) -> [u8; 20] {
    Sha1::digest(event.event_id().as_bytes()).into()
}

fn allowed<S: EventSource>(
    version: &RoomVersion,
    event: &S::Event,
    state: &StateMap,
    source: &S,
) -> bool {
    let lookup = |event_type: &str, state_key: &str| -> Option<S::Event> {
        let key = source.state_key_id(event_type, state_key)?;
        state
            .get(&key)
            .and_then(|&id: &ShortEventId| source.event(id))
    };
    check_against_state(version, event, &lookup).is_ok()
}
