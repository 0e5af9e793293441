//! Rooms end to end inside the service: create, send, refuse, persist.

use std::{collections::BTreeMap, sync::Arc};

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use conduit_state_res::Event;
use ruma::{CanonicalJsonObject, user_id};
use serde_json::json;

use super::{
    create::{NewRoom, Preset},
    send::{NewEvent, version_rules},
};
use crate::{Config, ErrorCode, Services};

fn services(dir: &std::path::Path) -> Arc<Services> {
    let mut config = Config::load(None).unwrap().config;
    config.database_path = dir.to_owned();
    Services::open(config).unwrap()
}

fn message(body: &str) -> NewEvent<'_> {
    NewEvent {
        kind: "m.room.message",
        state_key: None,
        content: json!({ "msgtype": "m.text", "body": body }),
    }
}

#[tokio::test]
async fn create_send_and_refuse_in_v11_and_v12() {
    for version in ["11", "12"] {
        let dir = tempfile::tempdir().unwrap();
        let s = services(dir.path());
        let alice = user_id!("@alice:localhost");
        let room_id = s
            .create_room(
                alice,
                NewRoom {
                    version: Some(version),
                    name: Some("Room"),
                    ..NewRoom::simple(Preset::PrivateChat)
                },
            )
            .await
            .unwrap();
        let record = s.rooms.room(&room_id).unwrap().unwrap();
        assert_eq!(record.version, version);
        if version == "12" {
            assert!(
                !room_id.contains(':'),
                "v12 room ids are the create event's hash: {room_id}"
            );
        }
        assert_eq!(
            s.rooms.joined_rooms(alice.as_str()).unwrap(),
            vec![room_id.clone()]
        );

        // The creator talks; a stranger is refused with the rule's reason.
        let pdu = s
            .send_local_event(&room_id, alice, message("hi"))
            .await
            .unwrap();
        assert_eq!(pdu.room_id.as_deref(), Some(room_id.as_str()));
        let head = s.rooms.head(record.short).unwrap();
        assert_eq!(head.extremities, vec![pdu.short]);
        let eve = user_id!("@eve:localhost");
        let err = s
            .send_local_event(&room_id, eve, message("let me in"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Forbidden));
        assert!(err.to_string().contains("not joined"), "{err}");
        assert_eq!(
            s.rooms.head(record.short).unwrap().extremities,
            vec![pdu.short],
            "nothing written"
        );

        // Invite-only: eve cannot join herself.
        let join = NewEvent {
            kind: "m.room.member",
            state_key: Some("@eve:localhost"),
            content: json!({"membership": "join"}),
        };
        assert!(s.send_local_event(&room_id, eve, join).await.is_err());

        // State is what was sent, and the chain of prev events holds.
        let state = s.rooms.state_map(&s.state_snapshots, &head).unwrap();
        let name = s.state_event(&state, "m.room.name", "").unwrap().unwrap();
        assert_eq!(name.content, json!({"name": "Room"}));
        assert_eq!(pdu.prev_events().len(), 1);
        let meta = s.rooms.meta(pdu.short).unwrap().unwrap();
        assert_eq!(meta.room, record.short);
    }
}

#[tokio::test]
async fn events_are_hashed_signed_and_named_by_their_reference_hash() {
    let dir = tempfile::tempdir().unwrap();
    let s = services(dir.path());
    let alice = user_id!("@alice:localhost");
    let room_id = s
        .create_room(
            alice,
            NewRoom {
                version: Some("11"),
                ..NewRoom::simple(Preset::PublicChat)
            },
        )
        .await
        .unwrap();
    let pdu = s
        .send_local_event(&room_id, alice, message("signed"))
        .await
        .unwrap();
    let (_, rules) = version_rules("11").unwrap();

    let mut object: CanonicalJsonObject = serde_json::from_value(pdu.json.clone()).unwrap();
    object.remove("event_id");
    let expected = ruma::signatures::reference_hash(&object, &rules).unwrap();
    assert_eq!(pdu.event_id, format!("${expected}"));

    let key = STANDARD_NO_PAD
        .decode(s.server_keys.public_key_base64())
        .unwrap();
    let keys = BTreeMap::from([(
        "localhost".to_owned(),
        BTreeMap::from([(s.server_keys.key_id(), ruma::serde::Base64::new(key))]),
    )]);
    let verified = ruma::signatures::verify_event(&keys, &object, &rules).unwrap();
    assert_eq!(
        verified,
        ruma::signatures::Verified::All,
        "hashes and signature check out"
    );
}

#[tokio::test]
async fn rooms_and_timelines_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let alice = user_id!("@alice:localhost");
    let (room_id, last) = {
        let s = services(dir.path());
        let room_id = s
            .create_room(
                alice,
                NewRoom {
                    topic: Some("t"),
                    ..NewRoom::simple(Preset::PublicChat)
                },
            )
            .await
            .unwrap();
        let last = s
            .send_local_event(&room_id, alice, message("before"))
            .await
            .unwrap();
        (room_id, last.event_id.clone())
    };
    let s = services(dir.path());
    let record = s.rooms.room(&room_id).unwrap().unwrap();
    let head = s.rooms.head(record.short).unwrap();
    assert_eq!(
        s.short_ids
            .event_id(head.extremities[0])
            .unwrap()
            .as_deref(),
        Some(last.as_str())
    );
    let after = s
        .send_local_event(&room_id, alice, message("after"))
        .await
        .unwrap();
    assert!(
        s.rooms.meta(after.short).unwrap().unwrap().count
            > s.rooms.meta(head.extremities[0]).unwrap().unwrap().count
    );
}

#[tokio::test]
async fn idle_room_locks_are_dropped_held_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let s = services(dir.path());
    let held = s.rooms.lock(u64::MAX).await;
    for room in 0..3000 {
        drop(s.rooms.lock(room).await);
    }
    let kept = s.rooms.locks_kept();
    assert!(kept <= 1025, "{kept} locks kept");
    // The held lock survived every pruning: a second locker waits for it.
    let waiting =
        tokio::time::timeout(std::time::Duration::from_millis(50), s.rooms.lock(u64::MAX)).await;
    assert!(waiting.is_err(), "the held room lock must still exclude");
    drop(held);
}

#[test]
fn old_federation_transactions_are_forgotten() {
    use crate::{federation::serve::TxnRecord, tables};
    let dir = tempfile::tempdir().unwrap();
    let s = services(dir.path());
    let mut batch = s.db.batch();
    let now = crate::utils::now_ms();
    for (txn, at) in [("old", now - 25 * 3600 * 1000), ("new", now - 3600 * 1000)] {
        let record = TxnRecord {
            answer: json!({ "pdus": {} }),
            at,
        };
        batch
            .put(&tables::FEDERATION_TXNS, ("peer.example", txn), &record)
            .unwrap();
    }
    s.db.write(batch).unwrap();
    s.prune_transactions().unwrap();
    assert!(
        !s.db
            .contains(&tables::FEDERATION_TXNS, ("peer.example", "old"))
            .unwrap()
    );
    assert!(
        s.db.contains(&tables::FEDERATION_TXNS, ("peer.example", "new"))
            .unwrap()
    );
}

#[tokio::test]
async fn member_summaries_updated_by_diffs_match_a_fresh_count() {
    use super::{members::MemberSummary, membership::Change};
    let dir = tempfile::tempdir().unwrap();
    let s = services(dir.path());
    let (alice, bob, carol) = (
        user_id!("@alice:localhost"),
        user_id!("@bob:localhost"),
        user_id!("@carol:localhost"),
    );
    let room_id = s
        .create_room(alice, NewRoom::simple(Preset::PublicChat))
        .await
        .unwrap();
    let record = s.rooms.room(&room_id).unwrap().unwrap();
    let check = |expected_joined: u64, expected_invited: u64| {
        let snapshot = s.rooms.head(record.short).unwrap().state.unwrap();
        let kept = s.member_summary(record.short, snapshot).unwrap();
        let state = s.state_snapshots.load(snapshot).unwrap();
        let fresh = s
            .update_summary(&MemberSummary::default(), &Default::default(), &state, None)
            .unwrap();
        assert_eq!(*kept, fresh);
        assert_eq!(
            (kept.joined, kept.invited),
            (expected_joined, expected_invited)
        );
        kept
    };
    check(1, 0);
    s.change_membership(&room_id, bob, bob, Change::Join, None)
        .await
        .unwrap();
    check(2, 0);
    s.change_membership(&room_id, alice, carol, Change::Invite, None)
        .await
        .unwrap();
    check(2, 1);
    s.send_event(
        &room_id,
        bob,
        NewEvent {
            kind: "m.room.member",
            state_key: Some(bob.as_str()),
            content: json!({ "membership": "join", "displayname": "Bobby" }),
        },
        None,
    )
    .await
    .unwrap();
    let summary = check(2, 1);
    assert_eq!(summary.local_joined[bob], "Bobby");
    s.change_membership(&room_id, bob, bob, Change::Leave, None)
        .await
        .unwrap();
    let summary = check(1, 1);
    assert!(!summary.local_joined.contains_key(bob));
    assert_eq!(
        summary
            .servers(true)
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        vec!["localhost"]
    );
}
