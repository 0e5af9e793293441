//! End-to-end encryption inside the service: the rules a client relies on.

use std::sync::Arc;

use ruma::{DeviceId, UserId, device_id, user_id};
use serde_json::{Map, Value as JsonValue, json};

use super::{keys::KeyUpload, test_keys::TestKey};
use crate::{
    Config, ErrorCode, Services,
    rooms::{
        create::{NewRoom, Preset},
        membership::Change,
    },
    users::devices::SessionRequest,
};

fn services(dir: &std::path::Path, edit: impl FnOnce(&mut Config)) -> Arc<Services> {
    let mut config = Config::load(None).unwrap().config;
    config.database_path = dir.to_owned();
    edit(&mut config);
    Services::open(config).unwrap()
}

fn login(s: &Services, user: &UserId, device: &DeviceId) {
    s.devices
        .create_session(SessionRequest {
            user_id: user,
            device_id: Some(device),
            display_name: None,
            with_refresh_token: false,
            is_guest: false,
            client_ip: None,
            oauth_client: None,
        })
        .unwrap();
}

fn device_keys(key: &TestKey, user: &UserId, device: &str) -> JsonValue {
    let mut keys = json!({
        "user_id": user,
        "device_id": device,
        "algorithms": ["m.megolm.v1.aes-sha2"],
        "keys": { format!("ed25519:{device}"): key.public(), format!("curve25519:{device}"): "c" },
    });
    key.sign(user.as_str(), &format!("ed25519:{device}"), &mut keys);
    keys
}

fn claim_one(s: &Services, user: &UserId, device: &str) -> Option<String> {
    let wanted: Map<String, JsonValue> =
        serde_json::from_value(json!({ user.as_str(): { device: "signed_curve25519" } })).unwrap();
    let claimed = s.claim_local_keys(&wanted).unwrap();
    claimed
        .get(user.as_str())
        .and_then(|d| d.get(device))
        .and_then(JsonValue::as_object)
        .and_then(|k| k.keys().next().cloned())
}

#[tokio::test]
async fn uploads_are_checked_and_keys_are_claimed_once_then_the_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let s = services(dir.path(), |_| {});
    let (bob, d) = (user_id!("@bob:localhost"), device_id!("BOBDEV"));
    login(&s, bob, d);
    let key = TestKey::new();

    // Keys signed by another key, or naming another device, change nothing.
    let other = TestKey::new();
    let mut forged = device_keys(&key, bob, "BOBDEV");
    other.sign(bob.as_str(), "ed25519:BOBDEV", &mut forged);
    let upload = |keys: JsonValue| KeyUpload {
        device_keys: Some(keys),
        ..Default::default()
    };
    let err = s.upload_keys(bob, d, upload(forged)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidSignature));
    let err = s
        .upload_keys(bob, d, upload(device_keys(&key, bob, "OTHER")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidParam));
    assert!(s.device_keys_of(bob, &[], true).unwrap().is_empty());

    let mut one_time_keys = Map::new();
    for id in ["A", "B", "C"] {
        one_time_keys.insert(format!("signed_curve25519:{id}"), json!({ "key": id }));
    }
    let mut fallback_keys = Map::new();
    fallback_keys.insert(
        "signed_curve25519:F".into(),
        json!({ "key": "F", "fallback": true }),
    );
    let counts = s
        .upload_keys(
            bob,
            d,
            KeyUpload {
                device_keys: Some(device_keys(&key, bob, "BOBDEV")),
                one_time_keys,
                fallback_keys,
            },
        )
        .await
        .unwrap();
    assert_eq!(counts["signed_curve25519"], 3);

    // Claimers on many threads at once: every key reaches exactly one.
    let claims: Vec<Option<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| claim_one(&s, bob, "BOBDEV")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut one_time: Vec<String> = claims
        .iter()
        .flatten()
        .filter(|id| !id.ends_with(":F"))
        .cloned()
        .collect();
    one_time.sort();
    assert_eq!(
        one_time,
        [
            "signed_curve25519:A",
            "signed_curve25519:B",
            "signed_curve25519:C"
        ]
    );
    assert_eq!(
        claims
            .iter()
            .flatten()
            .filter(|id| id.ends_with(":F"))
            .count(),
        3
    );
    assert!(s.one_time_key_counts(bob, d).unwrap().is_empty());
    assert!(s.unused_fallback_key_types(bob, d).unwrap().is_empty());
    // A device without keys gives nothing.
    assert_eq!(claim_one(&s, bob, "NOPE"), None);

    // Deleting the device deletes its keys.
    s.delete_devices(bob, &[d]).await.unwrap();
    assert!(s.device_keys_of(bob, &[], true).unwrap().is_empty());
    assert_eq!(claim_one(&s, bob, "BOBDEV"), None);
}

#[tokio::test]
async fn to_device_waits_for_its_acknowledgement_and_queues_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let s = services(dir.path(), |config| config.to_device_queue_limit = 3);
    let (alice, bob, d) = (
        user_id!("@alice:localhost"),
        user_id!("@bob:localhost"),
        device_id!("BOBDEV"),
    );
    login(&s, bob, d);
    let messages = |n: u64| -> Map<String, JsonValue> {
        serde_json::from_value(json!({ bob.as_str(): { "BOBDEV": { "n": n } } })).unwrap()
    };
    for n in 0..5 {
        s.send_to_device(alice, "ALICEDEV", "m.test", &format!("t{n}"), &messages(n))
            .unwrap();
    }
    // The same transaction again is not a new message.
    s.send_to_device(alice, "ALICEDEV", "m.test", "t0", &messages(9))
        .unwrap();
    let first_next = s.stream.position();
    let events = s.to_device_for_sync(bob, d, None, first_next).unwrap();
    let numbers: Vec<u64> = events
        .iter()
        .map(|e| e["content"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        numbers,
        [0, 1, 2],
        "the queue keeps three; the rest dropped"
    );
    // A sync from an older token sees them again; one from the token that
    // carried them acknowledges them.
    let again = s.to_device_for_sync(bob, d, Some(0), first_next).unwrap();
    assert_eq!(again.len(), 3);
    let next = s.stream.position();
    assert!(
        s.to_device_for_sync(bob, d, Some(first_next), next)
            .unwrap()
            .is_empty()
    );
    // Room again in the queue.
    s.send_to_device(alice, "ALICEDEV", "m.test", "t9", &messages(7))
        .unwrap();
    let events = s
        .to_device_for_sync(bob, d, Some(next), s.stream.position())
        .unwrap();
    assert_eq!(events[0]["content"]["n"], 7);
}

#[tokio::test]
async fn device_lists_tell_room_mates_who_changed_joined_and_left() {
    let dir = tempfile::tempdir().unwrap();
    let s = services(dir.path(), |_| {});
    let (alice, bob, carol) = (
        user_id!("@alice:localhost"),
        user_id!("@bob:localhost"),
        user_id!("@carol:localhost"),
    );
    for user in [alice, bob, carol] {
        login(&s, user, device_id!("DEV"));
    }
    let room = s
        .create_room(alice, NewRoom::simple(Preset::PublicChat))
        .await
        .unwrap();
    s.change_membership(&room, bob, bob, Change::Join, None)
        .await
        .unwrap();
    let since = s.stream.position();

    // Bob's new keys are news for alice; carol shares no room with him.
    let key = TestKey::new();
    s.upload_keys(
        bob,
        device_id!("DEV"),
        KeyUpload {
            device_keys: Some(device_keys(&key, bob, "DEV")),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let now = s.stream.position();
    let news = s.device_list_news(alice, since, now).unwrap();
    assert!(news.changed.contains(bob.as_str()) && news.left.is_empty());
    assert!(s.device_list_news(carol, since, now).unwrap().is_empty());
    // Bob's own devices are news for him too.
    assert!(
        s.device_list_news(bob, since, now)
            .unwrap()
            .changed
            .contains(bob.as_str())
    );

    // Carol joins: she learns everyone, everyone learns her.
    let since = s.stream.position();
    s.change_membership(&room, carol, carol, Change::Join, None)
        .await
        .unwrap();
    let now = s.stream.position();
    let for_carol = s.device_list_news(carol, since, now).unwrap();
    assert!(for_carol.changed.contains(alice.as_str()) && for_carol.changed.contains(bob.as_str()));
    assert!(
        s.device_list_news(alice, since, now)
            .unwrap()
            .changed
            .contains(carol.as_str())
    );
    // A new display name is no join.
    let since = now;
    s.change_membership(&room, carol, carol, Change::Join, None)
        .await
        .unwrap();
    assert!(
        s.device_list_news(alice, since, s.stream.position())
            .unwrap()
            .is_empty()
    );

    // Bob leaves: he is `left` for those who share nothing else with him.
    let since = s.stream.position();
    s.change_membership(&room, bob, bob, Change::Leave, None)
        .await
        .unwrap();
    let news = s
        .device_list_news(alice, since, s.stream.position())
        .unwrap();
    assert!(news.left.contains(bob.as_str()) && !news.changed.contains(bob.as_str()));
    let for_bob = s.device_list_news(bob, since, s.stream.position()).unwrap();
    assert!(for_bob.left.contains(alice.as_str()) && for_bob.left.contains(carol.as_str()));
}

#[tokio::test]
async fn signatures_on_another_users_master_key_are_the_signers_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = services(dir.path(), |_| {});
    let (alice, bob, carol) = (
        user_id!("@alice:localhost"),
        user_id!("@bob:localhost"),
        user_id!("@carol:localhost"),
    );
    let cross_key = |user: &UserId, usage: &str, key: &TestKey, signer: Option<&TestKey>| {
        let mut body = json!({
            "user_id": user,
            "usage": [usage],
            "keys": { format!("ed25519:{}", key.public()): key.public() },
        });
        if let Some(signer) = signer {
            signer.sign(
                user.as_str(),
                &format!("ed25519:{}", signer.public()),
                &mut body,
            );
        }
        body
    };
    let (bob_master, alice_master, alice_usk) = (TestKey::new(), TestKey::new(), TestKey::new());
    s.upload_cross_signing_keys(
        bob,
        super::cross_signing::CrossSigningUpload {
            master_key: Some(cross_key(bob, "master", &bob_master, None)),
            ..Default::default()
        },
        false,
    )
    .await
    .unwrap();
    s.upload_cross_signing_keys(
        alice,
        super::cross_signing::CrossSigningUpload {
            master_key: Some(cross_key(alice, "master", &alice_master, None)),
            user_signing_key: Some(cross_key(
                alice,
                "user_signing",
                &alice_usk,
                Some(&alice_master),
            )),
            ..Default::default()
        },
        false,
    )
    .await
    .unwrap();

    // Alice signs bob's master key with her user-signing key.
    let mut signed = cross_key(bob, "master", &bob_master, None);
    alice_usk.sign(
        alice.as_str(),
        &format!("ed25519:{}", alice_usk.public()),
        &mut signed,
    );
    let upload: Map<String, JsonValue> =
        serde_json::from_value(json!({ bob.as_str(): { bob_master.public(): signed.clone() } }))
            .unwrap();
    let failures = s.upload_key_signatures(alice, &upload).await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let master_for = |asker: &UserId| {
        s.cross_signing_keys_for(bob, Some(asker)).unwrap()[0]
            .1
            .clone()
            .unwrap()
    };
    assert!(master_for(alice)["signatures"][alice.as_str()].is_object());
    assert!(
        master_for(carol)["signatures"]
            .get(alice.as_str())
            .is_none()
    );
    // A signature by a key that is not alice's user-signing key fails.
    let mut forged = cross_key(bob, "master", &bob_master, None);
    TestKey::new().sign(
        alice.as_str(),
        &format!("ed25519:{}", alice_usk.public()),
        &mut forged,
    );
    let upload: Map<String, JsonValue> =
        serde_json::from_value(json!({ bob.as_str(): { bob_master.public(): forged } })).unwrap();
    let failures = s.upload_key_signatures(alice, &upload).await.unwrap();
    assert_eq!(
        failures[bob.as_str()][bob_master.public()]["errcode"],
        "M_INVALID_SIGNATURE"
    );
}
