//! Resolution time for generated rooms, this crate against ruma's state
//! resolution on the same input. Prints one line per room:
//!
//!     cargo bench -p conduit-state-res --bench resolve [-- quick]
//!
//! A room has N state events (members joining one after another) and then
//! K forks of 60 events each (power level changes, bans, leaves, joins,
//! topics, join rule changes by the admin), whose states are resolved.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Room, rules_for};
use conduit_state_res::{StateMap, resolve};
use ruma::{EventId, OwnedEventId, state_res as oracle};
use serde_json::json;

const FORK_EVENTS: usize = 60;

struct Scenario {
    room: Room,
    tips: Vec<StateMap>,
}

/// A small deterministic generator, so every run resolves the same rooms.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

fn build(version: &str, members: usize, forks: usize) -> Scenario {
    let mut room = Room::new(version);
    let admin = "@admin:bench.org";
    let v12 = room.version.room_id_is_create_event;
    let admin_users = |extra: serde_json::Value| {
        let mut users = serde_json::Map::new();
        if !v12 {
            users.insert(admin.into(), json!(100));
        }
        if let serde_json::Value::Object(extra) = extra {
            users.extend(extra);
        }
        serde_json::Value::Object(users)
    };
    let (mut tip, mut state) = room.push(
        admin,
        "m.room.create",
        Some(""),
        json!({"creator": admin, "room_version": version}),
        vec![],
        StateMap::new(),
    );
    for (kind, key, content) in [
        ("m.room.member", admin, json!({"membership": "join"})),
        (
            "m.room.power_levels",
            "",
            json!({"users": admin_users(json!({}))}),
        ),
        ("m.room.join_rules", "", json!({"join_rule": "public"})),
    ] {
        (tip, state) = room.push(admin, kind, Some(key), content, vec![tip], state);
    }
    let user = |i: usize| format!("@u{i}:bench.org");
    for i in 0..members {
        let u = user(i);
        (tip, state) = room.push(
            &u,
            "m.room.member",
            Some(&u),
            json!({"membership": "join"}),
            vec![tip],
            state,
        );
    }

    let mut rng = Lcg(members as u64 * 31 + forks as u64);
    let mut tips = Vec::new();
    for fork in 0..forks {
        let (mut f_tip, mut f_state) = (tip, state.clone());
        for step in 0..FORK_EVENTS {
            let target = user(rng.next(members));
            let (sender, kind, key, content) = match rng.next(6) {
                0 => {
                    let levels =
                        json!({ user(rng.next(members)): 50, user(rng.next(members)): 10 });
                    (
                        admin.to_owned(),
                        "m.room.power_levels",
                        String::new(),
                        json!({"users": admin_users(levels)}),
                    )
                }
                1 => (
                    admin.to_owned(),
                    "m.room.member",
                    target,
                    json!({"membership": "ban"}),
                ),
                2 => (
                    target.clone(),
                    "m.room.member",
                    target,
                    json!({"membership": "leave"}),
                ),
                3 => {
                    let newcomer = format!("@f{fork}s{step}:bench.org");
                    (
                        newcomer.clone(),
                        "m.room.member",
                        newcomer,
                        json!({"membership": "join"}),
                    )
                }
                4 => (
                    admin.to_owned(),
                    "m.room.topic",
                    String::new(),
                    json!({"topic": format!("{fork}/{step}")}),
                ),
                _ => {
                    let rule = if rng.next(2) == 0 { "public" } else { "invite" };
                    (
                        admin.to_owned(),
                        "m.room.join_rules",
                        String::new(),
                        json!({"join_rule": rule}),
                    )
                }
            };
            (f_tip, f_state) = room.push(&sender, kind, Some(&key), content, vec![f_tip], f_state);
        }
        tips.push(f_state);
    }
    Scenario { room, tips }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut samples = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        last = Some(std::hint::black_box(f()));
        samples.push(start.elapsed());
    }
    (median(samples), last.expect("at least one run"))
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let sizes: &[(usize, &[usize])] = if quick {
        &[(2_000, &[2, 4])]
    } else {
        &[(10_000, &[2, 4, 8]), (50_000, &[2, 8])]
    };
    println!(
        "{:>8} {:>6} {:>6} {:>10} {:>10} {:>8}",
        "members", "forks", "room", "ours ms", "ruma ms", "ruma/ours"
    );
    for &(members, forks_list) in sizes {
        for &forks in forks_list {
            for version in ["11", "12"] {
                let scenario = build(version, members, forks);
                let room = &scenario.room;
                let runs = if members >= 50_000 { 3 } else { 5 };
                let (ours, resolved) = time(runs, || resolve(room.version, &scenario.tips, room));

                // ruma gets its inputs ready-made, outside the timing: the
                // state maps keyed by strings, and the auth chains.
                let maps: Vec<_> = scenario
                    .tips
                    .iter()
                    .map(|s| room.to_ruma_state(s))
                    .collect();
                let chains = room.ruma_auth_chains(&scenario.tips);
                let rules = rules_for(version);
                let fetch =
                    |id: &EventId| room.by_id.get(id).map(|s| room.events[*s as usize].clone());
                let subgraph = |conflicted: &oracle::StateMap<Vec<OwnedEventId>>| {
                    let ids: Vec<_> = conflicted
                        .values()
                        .flatten()
                        .map(|id| room.by_id[id])
                        .collect();
                    Some(
                        conduit_state_res_subgraph(room, &ids)
                            .into_iter()
                            .map(|s| room.events[s as usize].id.clone())
                            .collect(),
                    )
                };
                let (theirs, their_state) = time(runs, || {
                    oracle::resolve(
                        &rules.authorization,
                        rules.state_res.v2_rules().expect("v2"),
                        maps.iter(),
                        chains.clone(),
                        fetch,
                        subgraph,
                    )
                    .expect("ruma resolves")
                });
                let same = room.to_ruma_state(&resolved) == their_state;
                println!(
                    "{members:>8} {forks:>6} {:>6} {:>10.2} {:>10.2} {:>8.1}{}",
                    format!("v{version}"),
                    ours.as_secs_f64() * 1e3,
                    theirs.as_secs_f64() * 1e3,
                    theirs.as_secs_f64() / ours.as_secs_f64(),
                    if same { "" } else { "  (results differ!)" },
                );
            }
        }
    }
}

/// ruma asks the caller for the v2.1 conflicted state subgraph; the same
/// brute force the property test uses would be too slow here, so this walks
/// the (shallow) auth DAG once per conflicted event.
fn conduit_state_res_subgraph(room: &Room, conflicted: &[u64]) -> std::collections::HashSet<u64> {
    room.brute_force_subgraph(conflicted)
}
