//! State resolution scenarios: the well-known cases (Synapse's and the
//! spec's), built as DAGs where the state before every event is itself
//! resolved from the states after its prev events.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value as JsonValue, json};

use crate::{
    auth::auth_types_for_event,
    event::{ShortEventId, types},
    resolve::{EventSource, ShortStateKey, StateMap, resolve},
    room_version::RoomVersion,
    test_room::TestEvent,
};

const ALICE: &str = "@alice:example.com";
const BOB: &str = "@bob:example.com";
const CHARLIE: &str = "@charlie:example.com";
const ELLA: &str = "@ella:example.com";
const ZARA: &str = "@zara:example.com";

struct Dag {
    version: &'static RoomVersion,
    events: BTreeMap<ShortEventId, TestEvent>,
    ids: HashMap<String, ShortEventId>,
    keys: BTreeMap<(String, String), ShortStateKey>,
    state_after: HashMap<ShortEventId, StateMap>,
}

impl EventSource for Dag {
    type Event = TestEvent;

    fn event(&self, id: ShortEventId) -> Option<TestEvent> {
        self.events.get(&id).cloned()
    }

    fn state_key_id(&self, event_type: &str, state_key: &str) -> Option<ShortStateKey> {
        self.keys
            .get(&(event_type.to_owned(), state_key.to_owned()))
            .copied()
    }
}

type Spec<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, JsonValue);

impl Dag {
    fn new(version: &str) -> Self {
        Self {
            version: RoomVersion::from_id(version).unwrap(),
            events: BTreeMap::new(),
            ids: HashMap::new(),
            keys: BTreeMap::new(),
            state_after: HashMap::new(),
        }
    }

    /// Adds one event after `prevs`; its auth events come from the state
    /// before it, which resolution computes when there are several prevs.
    fn add(&mut self, (name, sender, kind, state_key, content): Spec<'_>, prevs: &[&str]) {
        let id = self.events.len() as ShortEventId + 1;
        let prev: Vec<ShortEventId> = prevs.iter().map(|p| self.ids[*p]).collect();
        let prev_depth = prev.iter().map(|p| self.events[p].depth).max().unwrap_or(0);
        let before = match prev.as_slice() {
            [] => StateMap::new(),
            [one] => self.state_after[one].clone(),
            many => {
                let sets: Vec<StateMap> =
                    many.iter().map(|p| self.state_after[p].clone()).collect();
                resolve(self.version, &sets, self)
            }
        };
        let auth = auth_types_for_event(self.version, kind, sender, state_key, &content)
            .into_iter()
            .filter_map(|key| self.keys.get(&key).and_then(|k| before.get(k)).copied())
            .collect();
        let event = TestEvent {
            id,
            event_id: format!("${name}:example.com"),
            room_id: Some("!room:example.com".into()),
            kind: kind.into(),
            state_key: state_key.map(Into::into),
            sender: sender.into(),
            content,
            ts: id,
            depth: prev_depth + 1,
            prev,
            auth,
            rejected: false,
            redacts: None,
        };
        let mut after = before;
        if let Some(key) = state_key {
            let next = self.keys.len() as ShortStateKey + 1;
            let short = *self
                .keys
                .entry((kind.to_owned(), key.to_owned()))
                .or_insert(next);
            after.insert(short, id);
        }
        self.ids.insert(name.to_owned(), id);
        self.state_after.insert(id, after);
        self.events.insert(id, event);
    }

    fn state_at(&self, name: &str) -> StateMap {
        self.state_after[&self.ids[name]].clone()
    }

    /// The name of the event holding `(kind, key)` in `state`.
    fn holder(&self, state: &StateMap, kind: &str, key: &str) -> Option<String> {
        let short = self.keys.get(&(kind.to_owned(), key.to_owned()))?;
        let id = state.get(short)?;
        let event_id = &self.events[id].event_id;
        Some(event_id[1..event_id.len() - ":example.com".len()].to_owned())
    }
}

fn member(
    name: &'static str,
    sender: &'static str,
    target: &'static str,
    membership: &str,
) -> Spec<'static> {
    (
        name,
        sender,
        types::MEMBER,
        Some(target),
        json!({ "membership": membership }),
    )
}

fn power(name: &'static str, sender: &'static str, users: JsonValue) -> Spec<'static> {
    (
        name,
        sender,
        types::POWER_LEVELS,
        Some(""),
        json!({ "users": users }),
    )
}

fn topic(name: &'static str, sender: &'static str) -> Spec<'static> {
    (
        name,
        sender,
        "m.room.topic",
        Some(""),
        json!({ "topic": name }),
    )
}

/// The room every scenario starts from: Alice created it and is admin, it is
/// public, Bob, Charlie and Zara joined; START is a message after them.
fn initial(version: &str) -> Dag {
    let mut dag = Dag::new(version);
    dag.add(
        (
            "CREATE",
            ALICE,
            types::CREATE,
            Some(""),
            json!({"creator": ALICE}),
        ),
        &[],
    );
    dag.add(member("IMA", ALICE, ALICE, "join"), &["CREATE"]);
    let admin = if dag.version.infinite_creator_power {
        json!({})
    } else {
        json!({ ALICE: 100 })
    };
    dag.add(power("IPOWER", ALICE, admin), &["IMA"]);
    dag.add(
        (
            "IJR",
            ALICE,
            types::JOIN_RULES,
            Some(""),
            json!({"join_rule": "public"}),
        ),
        &["IPOWER"],
    );
    dag.add(member("IMB", BOB, BOB, "join"), &["IJR"]);
    dag.add(member("IMC", CHARLIE, CHARLIE, "join"), &["IMB"]);
    dag.add(member("IMZ", ZARA, ZARA, "join"), &["IMC"]);
    dag.add(("START", ZARA, "m.room.message", None, json!({})), &["IMZ"]);
    dag
}

/// Builds the scenario (events in order, each with its prevs), ends it with
/// a message whose prevs are `end_prevs`, and returns the state there.
fn scenario(
    version: &str,
    events: Vec<(Spec<'static>, &[&str])>,
    end_prevs: &[&str],
) -> (Dag, StateMap) {
    let mut dag = initial(version);
    for (spec, prevs) in events {
        dag.add(spec, prevs);
    }
    dag.add(("END", ZARA, "m.room.message", None, json!({})), end_prevs);
    let state = dag.state_at("END");
    (dag, state)
}

/// Versions with the v2 algorithm and `creator` semantics the scenarios assume.
fn v2_versions() -> impl Iterator<Item = &'static str> {
    ["2", "3", "6", "8", "10", "11"].into_iter()
}

#[test]
fn ban_vs_power_levels() {
    // Alice bans Bob while Bob, concurrently, changes power levels: the ban wins.
    for v in v2_versions() {
        let (dag, state) = scenario(
            v,
            vec![
                (power("PA", ALICE, json!({ALICE: 100, BOB: 50})), &["START"]),
                (member("MA", ALICE, ALICE, "join"), &["PA"]),
                (member("MB", ALICE, BOB, "ban"), &["MA"]),
                (power("PB", BOB, json!({ALICE: 100, BOB: 50})), &["PA"]),
            ],
            &["MB", "PB"],
        );
        assert_eq!(
            dag.holder(&state, types::POWER_LEVELS, "").as_deref(),
            Some("PA"),
            "v{v}"
        );
        assert_eq!(
            dag.holder(&state, types::MEMBER, ALICE).as_deref(),
            Some("MA"),
            "v{v}"
        );
        assert_eq!(
            dag.holder(&state, types::MEMBER, BOB).as_deref(),
            Some("MB"),
            "v{v}"
        );
    }
}

#[test]
fn join_rule_evasion() {
    // Ella joins concurrently with the room going private: the join is undone.
    for v in v2_versions() {
        let (dag, state) = scenario(
            v,
            vec![
                (
                    (
                        "JR",
                        ALICE,
                        types::JOIN_RULES,
                        Some(""),
                        json!({"join_rule": "private"}),
                    ),
                    &["START"],
                ),
                (member("ME", ELLA, ELLA, "join"), &["START"]),
            ],
            &["JR", "ME"],
        );
        assert_eq!(
            dag.holder(&state, types::JOIN_RULES, "").as_deref(),
            Some("JR"),
            "v{v}"
        );
        assert_eq!(dag.holder(&state, types::MEMBER, ELLA), None, "v{v}");
    }
}

#[test]
fn offtopic_power_levels() {
    // Alice's later power levels win over Bob's promotion of Charlie.
    for v in v2_versions() {
        let (dag, state) = scenario(
            v,
            vec![
                (power("PA", ALICE, json!({ALICE: 100, BOB: 50})), &["START"]),
                (
                    power("PB", BOB, json!({ALICE: 100, BOB: 50, CHARLIE: 50})),
                    &["PA"],
                ),
                (
                    power("PC", ALICE, json!({ALICE: 100, BOB: 50, CHARLIE: 0})),
                    &["PB"],
                ),
            ],
            &["PC", "PA"],
        );
        assert_eq!(
            dag.holder(&state, types::POWER_LEVELS, "").as_deref(),
            Some("PC"),
            "v{v}"
        );
    }
}

#[test]
fn topic_basic() {
    // Bob's topic rests on power Alice took away on the other branch.
    for v in v2_versions() {
        let (dag, state) = scenario(
            v,
            vec![
                (topic("T1", ALICE), &["START"]),
                (power("PA1", ALICE, json!({ALICE: 100, BOB: 50})), &["T1"]),
                (topic("T2", ALICE), &["PA1"]),
                (power("PA2", ALICE, json!({ALICE: 100, BOB: 0})), &["T2"]),
                (power("PB", BOB, json!({ALICE: 100, BOB: 50})), &["PA1"]),
                (topic("T3", BOB), &["PB"]),
            ],
            &["PA2", "T3"],
        );
        assert_eq!(
            dag.holder(&state, types::POWER_LEVELS, "").as_deref(),
            Some("PA2"),
            "v{v}"
        );
        assert_eq!(
            dag.holder(&state, "m.room.topic", "").as_deref(),
            Some("T2"),
            "v{v}"
        );
    }
}

#[test]
fn topic_reset() {
    // Bob set a topic, then was banned on one branch: his topic is reset to T1.
    for v in v2_versions() {
        let (dag, state) = scenario(
            v,
            vec![
                (topic("T1", ALICE), &["START"]),
                (power("PA", ALICE, json!({ALICE: 100, BOB: 50})), &["T1"]),
                (topic("T2", BOB), &["PA"]),
                (member("MB", ALICE, BOB, "ban"), &["T2"]),
            ],
            &["MB", "T1"],
        );
        assert_eq!(
            dag.holder(&state, "m.room.topic", "").as_deref(),
            Some("T1"),
            "v{v}"
        );
        assert_eq!(
            dag.holder(&state, types::MEMBER, BOB).as_deref(),
            Some("MB"),
            "v{v}"
        );
        assert_eq!(
            dag.holder(&state, types::POWER_LEVELS, "").as_deref(),
            Some("PA"),
            "v{v}"
        );
    }
}

#[test]
fn topic_with_concurrent_power_changes() {
    for v in v2_versions() {
        let (dag, state) = scenario(
            v,
            vec![
                (topic("T1", ALICE), &["START"]),
                (power("PA1", ALICE, json!({ALICE: 100, BOB: 50})), &["T1"]),
                (topic("T2", ALICE), &["PA1"]),
                (power("PA2", ALICE, json!({ALICE: 100, BOB: 0})), &["T2"]),
                (power("PB", BOB, json!({ALICE: 100, BOB: 50})), &["PA1"]),
                (topic("T3", BOB), &["PB"]),
                (("MZ1", ZARA, "m.room.message", None, json!({})), &["T3"]),
                (topic("T4", ALICE), &["PA2"]),
            ],
            &["T4", "MZ1"],
        );
        assert_eq!(
            dag.holder(&state, "m.room.topic", "").as_deref(),
            Some("T4"),
            "v{v}"
        );
        assert_eq!(
            dag.holder(&state, types::POWER_LEVELS, "").as_deref(),
            Some("PA2"),
            "v{v}"
        );
    }
}

#[test]
fn mainline_sort() {
    // Both branches' topics pass auth; the one based on the later mainline
    // power levels (PA2) sorts last and wins.
    for v in v2_versions() {
        let (dag, state) = scenario(
            v,
            vec![
                (topic("T1", ALICE), &["START"]),
                (power("PA1", ALICE, json!({ALICE: 100, BOB: 50})), &["T1"]),
                (topic("T2", ALICE), &["PA1"]),
                (
                    (
                        "PA2",
                        ALICE,
                        types::POWER_LEVELS,
                        Some(""),
                        json!({"users": {ALICE: 100, BOB: 50}, "events": {types::POWER_LEVELS: 100}}),
                    ),
                    &["T2"],
                ),
                (power("PB", BOB, json!({ALICE: 100, BOB: 50})), &["PA1"]),
                (topic("T3", BOB), &["PA2"]),
                (topic("T4", ALICE), &["PB"]),
            ],
            &["T3", "T4"],
        );
        assert_eq!(
            dag.holder(&state, "m.room.topic", "").as_deref(),
            Some("T3"),
            "v{v}"
        );
        assert_eq!(
            dag.holder(&state, types::POWER_LEVELS, "").as_deref(),
            Some("PA2"),
            "v{v}"
        );
    }
}

#[test]
fn unconflicted_state_is_kept_and_single_sets_pass_through() {
    let dag = initial("11");
    let state = dag.state_at("START");
    let version = RoomVersion::from_id("11").unwrap();
    assert_eq!(resolve(version, std::slice::from_ref(&state), &dag), state);
    assert_eq!(
        resolve(version, &[state.clone(), state.clone()], &dag),
        state
    );
    let v1 = RoomVersion::from_id("1").unwrap();
    assert_eq!(resolve(v1, &[state.clone(), state.clone()], &dag), state);
}

#[test]
fn v2_1_topic_reset_keeps_the_unconflicted_state() {
    // Room version 12: Alice is the creator (infinite power, not listed in
    // users). Resolution starts from an empty state, so the unconflicted
    // state must be laid back on top at the end.
    let (dag, state) = scenario(
        "12",
        vec![
            (topic("T1", ALICE), &["START"]),
            (power("PA", ALICE, json!({BOB: 50})), &["T1"]),
            (topic("T2", BOB), &["PA"]),
            (member("MB", ALICE, BOB, "ban"), &["T2"]),
        ],
        &["MB", "T1"],
    );
    assert_eq!(
        dag.holder(&state, "m.room.topic", "").as_deref(),
        Some("T1")
    );
    assert_eq!(
        dag.holder(&state, types::MEMBER, BOB).as_deref(),
        Some("MB")
    );
    assert_eq!(
        dag.holder(&state, types::POWER_LEVELS, "").as_deref(),
        Some("PA")
    );
    for (kind, key, holder) in [
        (types::JOIN_RULES, "", "IJR"),
        (types::MEMBER, CHARLIE, "IMC"),
        (types::MEMBER, ZARA, "IMZ"),
        (types::CREATE, "", "CREATE"),
    ] {
        assert_eq!(
            dag.holder(&state, kind, key).as_deref(),
            Some(holder),
            "{kind} {key}"
        );
    }
}

#[test]
fn v2_1_ban_vs_power_levels() {
    let (dag, state) = scenario(
        "12",
        vec![
            (power("PA", ALICE, json!({BOB: 50})), &["START"]),
            (member("MA", ALICE, ALICE, "join"), &["PA"]),
            (member("MB", ALICE, BOB, "ban"), &["MA"]),
            (power("PB", BOB, json!({BOB: 50, CHARLIE: 10})), &["PA"]),
        ],
        &["MB", "PB"],
    );
    assert_eq!(
        dag.holder(&state, types::POWER_LEVELS, "").as_deref(),
        Some("PA")
    );
    assert_eq!(
        dag.holder(&state, types::MEMBER, BOB).as_deref(),
        Some("MB")
    );
}

#[test]
fn split_auth_difference_and_conflicted_subgraph() {
    use crate::{id_hash::IdSet, resolve::split_conflicted};

    // Two forks after START: A1 <- A2 (A2 cites A1 as its power levels) and B1.
    let mut dag = initial("12");
    dag.add(power("A1", ALICE, json!({BOB: 50})), &["START"]);
    dag.add(topic("X", BOB), &["A1"]);
    dag.add(power("A2", BOB, json!({BOB: 50, CHARLIE: 5})), &["X"]);
    dag.add(topic("B1", ALICE), &["START"]);
    let left = dag.state_at("A2");
    let right = dag.state_at("B1");
    let (unconflicted, conflicted) = split_conflicted(&[left.clone(), right.clone()]);
    let names = |ids: &mut dyn Iterator<Item = &ShortEventId>| -> Vec<String> {
        let mut v: Vec<String> = ids.map(|id| dag.events[id].event_id.clone()).collect();
        v.sort();
        v
    };
    // Power levels (A2 vs IPOWER) and topic (X vs B1) are conflicted.
    assert_eq!(
        names(&mut conflicted.iter()),
        [
            "$A2:example.com",
            "$B1:example.com",
            "$IPOWER:example.com",
            "$X:example.com"
        ]
    );
    assert!(unconflicted.values().all(|id| !conflicted.contains(id)));

    // A1 lies on the auth path A2 -> A1 -> IPOWER between conflicted events.
    let subgraph = crate::resolve::conflicted_subgraph(&conflicted, &dag);
    let a1 = dag.ids["A1"];
    assert!(subgraph.contains(&a1));
    // The create event is below IPOWER, on no path between two conflicted events.
    assert!(!subgraph.contains(&dag.ids["CREATE"]));
    let _: IdSet = subgraph;
}

#[test]
fn v1_power_levels_then_other_state_by_depth() {
    // Room version 1: conflicting power levels are taken in ascending depth
    // while allowed; a conflicting topic goes to the deepest allowed one.
    let (dag, state) = scenario(
        "1",
        vec![
            (power("PA", ALICE, json!({ALICE: 100, BOB: 50})), &["START"]),
            (topic("TB", BOB), &["PA"]),
            (topic("TB2", BOB), &["TB"]),
            (power("PZ", ALICE, json!({ALICE: 100, BOB: 0})), &["START"]),
        ],
        &["TB2", "PZ"],
    );
    // PA and PZ have the same depth: the higher SHA-1 goes first, and the
    // other, allowed (both are Alice's), replaces it.
    use sha1::{Digest, Sha1};
    let sha = |name: &str| Sha1::digest(format!("${name}:example.com").as_bytes());
    let expected = if sha("PA") > sha("PZ") { "PZ" } else { "PA" };
    assert_eq!(
        dag.holder(&state, types::POWER_LEVELS, "").as_deref(),
        Some(expected)
    );
    // The topic exists on one branch only: no conflict in v1, so it stays
    // even though Bob would fail under PZ.
    assert_eq!(
        dag.holder(&state, "m.room.topic", "").as_deref(),
        Some("TB2")
    );
}

#[test]
fn v1_membership_conflicts_stop_at_the_first_refused_event() {
    // Bob is banned on one branch and changes nothing on the other: the ban,
    // deeper, is allowed after his join and stands.
    let (dag, state) = scenario(
        "1",
        vec![
            (member("MB", ALICE, BOB, "ban"), &["START"]),
            (topic("T", ALICE), &["START"]),
        ],
        &["MB", "T"],
    );
    assert_eq!(
        dag.holder(&state, types::MEMBER, BOB).as_deref(),
        Some("MB")
    );
    assert_eq!(dag.holder(&state, "m.room.topic", "").as_deref(), Some("T"));
}

#[test]
fn v1_keys_missing_from_some_states_are_no_conflict() {
    // A topic set on one branch only survives in v1 whatever its sender's
    // power: it is not conflicting, so no auth check runs on it.
    let (dag, state) = scenario(
        "1",
        vec![
            (topic("TB", BOB), &["START"]),
            (topic("TA", ALICE), &["START"]),
            (("M", ZARA, "m.room.message", None, json!({})), &["TA"]),
        ],
        &["TB", "M"],
    );
    // TA and TB conflict: the deepest allowed wins. Bob's TB fails (needs 50).
    assert_eq!(
        dag.holder(&state, "m.room.topic", "").as_deref(),
        Some("TA")
    );
    let (dag, state) = scenario("1", vec![(topic("TB", BOB), &["START"])], &["TB", "START"]);
    assert_eq!(
        dag.holder(&state, "m.room.topic", "").as_deref(),
        Some("TB")
    );
}
