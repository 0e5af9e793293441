//! One or more tests for every auth rule, run for every room version the
//! rule applies to.

use serde_json::json;

use crate::{
    event::types,
    rejection::Rejection,
    room_version::ALL,
    test_room::{ALICE, BOB, CAROL, EVE, TestRoom},
};

fn versions(pred: impl Fn(&crate::RoomVersion) -> bool) -> impl Iterator<Item = &'static str> {
    ALL.iter().filter(move |v| pred(v)).map(|v| v.id)
}

fn all_versions() -> impl Iterator<Item = &'static str> {
    versions(|_| true)
}

/// A room where Alice (admin) has let Bob in through a public join rule.
fn room_with_bob(version: &str) -> TestRoom {
    let mut room = TestRoom::new(version, ALICE, json!({}));
    room.state_event(
        ALICE,
        types::POWER_LEVELS,
        json!({"users": users_with_admin(&room, &[])}),
    )
    .unwrap();
    room.state_event(ALICE, types::JOIN_RULES, json!({"join_rule": "public"}))
        .unwrap();
    room.member(BOB, BOB, "join").unwrap();
    room
}

/// The `users` map for power levels: Alice at 100, unless she is a v12
/// creator (who may not be listed), plus the given entries.
fn users_with_admin(room: &TestRoom, extra: &[(&str, i64)]) -> serde_json::Value {
    let mut users = serde_json::Map::new();
    if !room.version.infinite_creator_power {
        users.insert(ALICE.into(), json!(100));
    }
    for (user, level) in extra {
        users.insert((*user).into(), json!(level));
    }
    serde_json::Value::Object(users)
}

// Rule 1: create events.

#[test]
fn create_with_prev_events_is_rejected() {
    for v in all_versions() {
        let mut room = TestRoom::new(v, ALICE, json!({}));
        let mut create = room.build(ALICE, types::CREATE, Some(""), json!({"creator": ALICE}));
        create.prev = vec![1];
        if room.version.room_id_is_create_event {
            create.room_id = None;
        }
        assert_eq!(
            room.check(&create),
            Err(Rejection::CreateHasPrevEvents),
            "v{v}"
        );
    }
}

#[test]
fn create_room_id_rules() {
    for v in versions(|v| !v.room_id_is_create_event) {
        let mut room = TestRoom::new(v, ALICE, json!({}));
        let mut create = room.build(BOB, types::CREATE, Some(""), json!({"creator": BOB}));
        create.prev.clear();
        assert_eq!(
            room.check(&create),
            Err(Rejection::CreateRoomIdOnOtherServer),
            "v{v}"
        );
    }
    let mut room = TestRoom::new("12", ALICE, json!({}));
    let mut create = room.build(ALICE, types::CREATE, Some(""), json!({}));
    create.prev.clear();
    create.room_id = Some("!x:a.example".into());
    assert_eq!(room.check(&create), Err(Rejection::CreateHasRoomId));
}

#[test]
fn create_content_rules() {
    for v in all_versions() {
        let mut room = TestRoom::new(v, ALICE, json!({}));
        let mut bad_version = room.build(
            ALICE,
            types::CREATE,
            Some(""),
            json!({"creator": ALICE, "room_version": "99"}),
        );
        bad_version.prev.clear();
        if room.version.room_id_is_create_event {
            bad_version.room_id = None;
        }
        assert!(
            matches!(
                room.check(&bad_version),
                Err(Rejection::UnknownRoomVersion(_))
            ),
            "v{v}"
        );

        let mut no_creator = room.build(ALICE, types::CREATE, Some(""), json!({}));
        no_creator.prev.clear();
        if room.version.room_id_is_create_event {
            no_creator.room_id = None;
        }
        let expected = if room.version.creator_in_content {
            Err(Rejection::CreateWithoutCreator)
        } else {
            Ok(())
        };
        assert_eq!(room.check(&no_creator), expected, "v{v}");
    }
    let mut room = TestRoom::new("12", ALICE, json!({}));
    for bad in [json!("@bob:b"), json!(["not a user"]), json!([1])] {
        let mut create = room.build(
            ALICE,
            types::CREATE,
            Some(""),
            json!({"additional_creators": bad}),
        );
        create.prev.clear();
        create.room_id = None;
        assert_eq!(
            room.check(&create),
            Err(Rejection::InvalidAdditionalCreators)
        );
    }
}

// Rules 2 and 3: auth events.

#[test]
fn v12_room_id_must_name_the_create_event() {
    let mut room = TestRoom::new("12", ALICE, json!({}));
    let mut event = room.build(ALICE, "m.room.message", None, json!({}));
    event.room_id = Some("!other".into());
    assert_eq!(room.check(&event), Err(Rejection::RoomIdNotCreateEvent));
}

#[test]
fn auth_event_rules() {
    for v in all_versions() {
        let mut room = room_with_bob(v);
        // Duplicate (type, state_key).
        let mut event = room.build(BOB, "m.room.message", None, json!({}));
        event.auth.push(event.auth[0]);
        assert!(
            matches!(room.check(&event), Err(Rejection::DuplicateAuthEvent(..))),
            "v{v}"
        );

        // An auth event the selection would not pick: join rules on a message.
        let mut event = room.build(BOB, "m.room.message", None, json!({}));
        event
            .auth
            .push(room.state[&(types::JOIN_RULES.into(), String::new())]);
        assert!(
            matches!(room.check(&event), Err(Rejection::UnexpectedAuthEvent(..))),
            "v{v}"
        );

        // A rejected auth event.
        let pl = room.state[&(types::POWER_LEVELS.into(), String::new())];
        room.events.get_mut(&pl).unwrap().rejected = true;
        let event = room.build(BOB, "m.room.message", None, json!({}));
        assert!(
            matches!(room.check(&event), Err(Rejection::RejectedAuthEvent(_))),
            "v{v}"
        );
        room.events.get_mut(&pl).unwrap().rejected = false;

        // An auth event of another room.
        room.events.get_mut(&pl).unwrap().room_id = Some("!elsewhere:x".into());
        let event = room.build(BOB, "m.room.message", None, json!({}));
        assert!(
            matches!(
                room.check(&event),
                Err(Rejection::AuthEventFromOtherRoom(_))
            ),
            "v{v}"
        );
    }
}

#[test]
fn create_must_be_an_auth_event_before_v12_and_must_not_be_in_v12() {
    for v in all_versions() {
        let mut room = room_with_bob(v);
        let create_id = room.create_event().id;
        let mut event = room.build(BOB, "m.room.message", None, json!({}));
        if room.version.room_id_is_create_event {
            event.auth.push(create_id);
            assert!(
                matches!(room.check(&event), Err(Rejection::UnexpectedAuthEvent(..))),
                "v{v}"
            );
        } else {
            event.auth.retain(|id| *id != create_id);
            assert_eq!(
                room.check(&event),
                Err(Rejection::MissingCreateAuthEvent),
                "v{v}"
            );
        }
    }
}

// Rule 4: m.federate.

#[test]
fn unfederated_rooms_refuse_other_servers() {
    for v in all_versions() {
        let mut room = TestRoom::new(v, ALICE, json!({"m.federate": false}));
        room.state_event(ALICE, types::JOIN_RULES, json!({"join_rule": "public"}))
            .unwrap();
        assert_eq!(
            room.member(BOB, BOB, "join").unwrap_err(),
            Rejection::NotFederated,
            "v{v}"
        );
        room.member(CAROL, CAROL, "join").unwrap();
    }
}

// v1–v5: m.room.aliases.

#[test]
fn aliases_special_case_until_v6() {
    for v in all_versions() {
        let mut room = room_with_bob(v);
        let wrong = room.send(
            BOB,
            types::ALIASES,
            Some("a.example"),
            json!({"aliases": []}),
        );
        let own = room.send(
            BOB,
            types::ALIASES,
            Some("b.example"),
            json!({"aliases": []}),
        );
        if room.version.special_case_aliases {
            assert_eq!(wrong.unwrap_err(), Rejection::AliasesStateKey, "v{v}");
            assert!(own.is_ok(), "v{v}: aliases need no power before v6");
        } else {
            // An ordinary state event: Bob lacks the state_default level.
            assert!(
                matches!(wrong, Err(Rejection::InsufficientPower { .. })),
                "v{v}"
            );
            assert!(
                matches!(own, Err(Rejection::InsufficientPower { .. })),
                "v{v}"
            );
        }
    }
}

// Rule 5: membership.

#[test]
fn member_event_needs_membership_and_state_key() {
    for v in all_versions() {
        let mut room = room_with_bob(v);
        let e = room.send(BOB, types::MEMBER, Some(BOB), json!({}));
        assert_eq!(e.unwrap_err(), Rejection::MemberWithoutMembership, "v{v}");
        let e = room.send(BOB, types::MEMBER, None, json!({"membership": "join"}));
        assert!(e.is_err(), "v{v}");
        let e = room.member(BOB, BOB, "dance");
        assert_eq!(
            e.unwrap_err(),
            Rejection::UnknownMembership("dance".into()),
            "v{v}"
        );
    }
}

#[test]
fn joins_follow_the_join_rule() {
    for v in all_versions() {
        let mut room = TestRoom::new(v, ALICE, json!({}));
        // No join rules event: invite-only.
        assert!(
            matches!(
                room.member(BOB, BOB, "join"),
                Err(Rejection::JoinRuleForbids(_))
            ),
            "v{v}"
        );
        room.state_event(ALICE, types::JOIN_RULES, json!({"join_rule": "invite"}))
            .unwrap();
        assert!(
            matches!(
                room.member(BOB, BOB, "join"),
                Err(Rejection::JoinRuleForbids(_))
            ),
            "v{v}"
        );
        room.member(ALICE, BOB, "invite").unwrap();
        room.member(BOB, BOB, "join").unwrap();
        // Nobody joins on behalf of another.
        let e = room.member(ALICE, CAROL, "join").unwrap_err();
        assert!(matches!(e, Rejection::JoinForOther { .. }), "v{v}");
        // An unknown join rule lets nobody in.
        room.state_event(ALICE, types::JOIN_RULES, json!({"join_rule": "private"}))
            .unwrap();
        assert!(
            matches!(
                room.member(CAROL, CAROL, "join"),
                Err(Rejection::JoinRuleForbids(_))
            ),
            "v{v}"
        );
        room.state_event(ALICE, types::JOIN_RULES, json!({"join_rule": "public"}))
            .unwrap();
        room.member(CAROL, CAROL, "join").unwrap();
    }
}

#[test]
fn only_the_creator_joins_right_after_create() {
    for v in all_versions() {
        let room = TestRoom::new(v, ALICE, json!({}));
        let mut fresh = TestRoom::new(v, ALICE, json!({}));
        // Rebuild: a join by someone else straight after the create event.
        fresh.state.retain(|(kind, _), _| kind == types::CREATE);
        fresh.last = Some(room.create_event().id);
        let e = fresh.member(BOB, BOB, "join");
        assert!(
            matches!(e, Err(Rejection::JoinRuleForbids(_))),
            "v{v}: {e:?}"
        );
    }
}

#[test]
fn banned_users_cannot_join() {
    for v in all_versions() {
        let mut room = room_with_bob(v);
        room.member(ALICE, BOB, "ban").unwrap();
        assert_eq!(
            room.member(BOB, BOB, "join").unwrap_err(),
            Rejection::Banned(BOB.into()),
            "v{v}"
        );
    }
}

#[test]
fn knock_join_rule() {
    for v in all_versions() {
        let mut room = TestRoom::new(v, ALICE, json!({}));
        room.state_event(ALICE, types::JOIN_RULES, json!({"join_rule": "knock"}))
            .unwrap();
        let knock = room.member(BOB, BOB, "knock");
        if !room.version.knocking {
            assert_eq!(
                knock.unwrap_err(),
                Rejection::UnknownMembership("knock".into()),
                "v{v}"
            );
            continue;
        }
        knock.unwrap();
        // Knocking is no way in by itself, and cannot be done for others.
        assert!(
            matches!(
                room.member(BOB, BOB, "join"),
                Err(Rejection::JoinRuleForbids(_))
            ),
            "v{v}"
        );
        assert_eq!(
            room.member(BOB, CAROL, "knock").unwrap_err(),
            Rejection::KnockForOther,
            "v{v}"
        );
        // A knocker may withdraw.
        room.member(BOB, BOB, "leave").unwrap();
        room.member(BOB, BOB, "knock").unwrap();
        room.member(ALICE, BOB, "invite").unwrap();
        assert!(
            matches!(
                room.member(BOB, BOB, "knock"),
                Err(Rejection::KnockFromMembership(_))
            ),
            "v{v}"
        );
        room.member(BOB, BOB, "join").unwrap();
        // Not in a public room.
        room.state_event(ALICE, types::JOIN_RULES, json!({"join_rule": "public"}))
            .unwrap();
        assert!(
            matches!(
                room.member(CAROL, CAROL, "knock"),
                Err(Rejection::KnockNotAllowed(_))
            ),
            "v{v}"
        );
    }
}

#[test]
fn restricted_joins_need_an_authorising_member() {
    for v in all_versions() {
        for rule in ["restricted", "knock_restricted"] {
            let mut room = room_with_bob(v);
            room.state_event(
                ALICE,
                types::JOIN_RULES,
                json!({"join_rule": rule, "allow": []}),
            )
            .unwrap();
            let supported = match rule {
                "restricted" => room.version.restricted_joins,
                _ => room.version.knock_restricted,
            };
            let via = |user: &str| json!({"membership": "join", "join_authorised_via_users_server": user});
            let by_alice = room.send(CAROL, types::MEMBER, Some(CAROL), via(ALICE));
            if !supported {
                assert!(
                    matches!(by_alice, Err(Rejection::JoinRuleForbids(_))),
                    "v{v} {rule}"
                );
                continue;
            }
            // Bob is joined but lacks invite power once invite needs 50.
            let mut room = room_with_bob(v);
            let users = users_with_admin(&room, &[]);
            room.state_event(
                ALICE,
                types::POWER_LEVELS,
                json!({"users": users, "invite": 50}),
            )
            .unwrap();
            room.state_event(
                ALICE,
                types::JOIN_RULES,
                json!({"join_rule": rule, "allow": []}),
            )
            .unwrap();
            let by_bob = room.send(CAROL, types::MEMBER, Some(CAROL), via(BOB));
            assert_eq!(
                by_bob.unwrap_err(),
                Rejection::InvalidAuthorisingUser(BOB.into()),
                "v{v} {rule}"
            );
            let by_eve = room.send(CAROL, types::MEMBER, Some(CAROL), via(EVE));
            assert!(
                matches!(by_eve, Err(Rejection::InvalidAuthorisingUser(_))),
                "v{v} {rule}"
            );
            room.send(CAROL, types::MEMBER, Some(CAROL), via(ALICE))
                .unwrap();
            if rule == "knock_restricted" {
                room.member(EVE, EVE, "knock").unwrap();
            }
        }
    }
}

#[test]
fn invites_need_a_joined_sender_with_power_and_a_free_target() {
    for v in all_versions() {
        let mut room = room_with_bob(v);
        assert!(
            matches!(
                room.member(EVE, CAROL, "invite"),
                Err(Rejection::SenderNotJoined(_))
            ),
            "v{v}"
        );
        assert!(
            matches!(
                room.member(ALICE, BOB, "invite"),
                Err(Rejection::InviteTargetMembership { .. })
            ),
            "v{v}"
        );
        room.member(BOB, CAROL, "invite").unwrap();
        let users = users_with_admin(&room, &[]);
        room.state_event(
            ALICE,
            types::POWER_LEVELS,
            json!({"users": users, "invite": 50}),
        )
        .unwrap();
        assert!(
            matches!(
                room.member(BOB, EVE, "invite"),
                Err(Rejection::InsufficientPower { what: "invite", .. })
            ),
            "v{v}"
        );
        room.member(ALICE, EVE, "ban").unwrap();
        assert!(
            matches!(
                room.member(ALICE, EVE, "invite"),
                Err(Rejection::InviteTargetMembership { .. })
            ),
            "v{v}"
        );
    }
}

#[test]
fn leaving_kicking_and_unbanning() {
    for v in all_versions() {
        let mut room = room_with_bob(v);
        // Leaving from leave is not a thing.
        assert!(
            matches!(
                room.member(CAROL, CAROL, "leave"),
                Err(Rejection::CannotLeave { .. })
            ),
            "v{v}"
        );
        // Bob (0) cannot kick Alice.
        assert!(
            matches!(
                room.member(BOB, ALICE, "leave"),
                Err(Rejection::InsufficientPower { what: "kick", .. })
            ),
            "v{v}"
        );
        room.member(CAROL, CAROL, "join").unwrap();
        // Alice kicks Carol; Eve, not joined, kicks nobody.
        assert!(
            matches!(
                room.member(EVE, CAROL, "leave"),
                Err(Rejection::SenderNotJoined(_))
            ),
            "v{v}"
        );
        room.member(ALICE, CAROL, "leave").unwrap();
        // Alice bans Carol; Bob cannot unban even with kick power.
        room.member(ALICE, CAROL, "ban").unwrap();
        let users = users_with_admin(&room, &[(BOB, 60)]);
        room.state_event(
            ALICE,
            types::POWER_LEVELS,
            json!({"users": users, "ban": 70}),
        )
        .unwrap();
        assert!(
            matches!(
                room.member(BOB, CAROL, "leave"),
                Err(Rejection::InsufficientPower { what: "ban", .. })
            ),
            "v{v}"
        );
        room.member(ALICE, CAROL, "leave").unwrap();
        // Bob leaves by himself.
        room.member(BOB, BOB, "leave").unwrap();
    }
}

#[test]
fn kicks_and_bans_only_reach_lower_users() {
    for v in all_versions() {
        let mut room = room_with_bob(v);
        room.member(CAROL, CAROL, "join").unwrap();
        let users = users_with_admin(&room, &[(BOB, 50), (CAROL, 50)]);
        room.state_event(ALICE, types::POWER_LEVELS, json!({"users": users}))
            .unwrap();
        assert!(
            matches!(
                room.member(BOB, CAROL, "leave"),
                Err(Rejection::TargetNotLower { .. })
            ),
            "v{v}"
        );
        assert!(
            matches!(
                room.member(BOB, CAROL, "ban"),
                Err(Rejection::TargetNotLower { .. })
            ),
            "v{v}"
        );
        assert!(
            matches!(
                room.member(BOB, ALICE, "ban"),
                Err(Rejection::TargetNotLower { .. })
            ),
            "v{v}"
        );
        assert!(
            matches!(
                room.member(EVE, CAROL, "ban"),
                Err(Rejection::SenderNotJoined(_))
            ),
            "v{v}"
        );
        room.member(ALICE, CAROL, "ban").unwrap();
    }
}

#[test]
fn third_party_invites() {
    for v in all_versions() {
        let mut room = room_with_bob(v);
        let users = users_with_admin(&room, &[]);
        room.state_event(
            ALICE,
            types::POWER_LEVELS,
            json!({"users": users, "invite": 50}),
        )
        .unwrap();
        // Rule 7: the invite event itself needs the invite level.
        let tpi =
            json!({"display_name": "c…", "key_validity_url": "https://x", "public_key": "abc"});
        let e = room.send(BOB, types::THIRD_PARTY_INVITE, Some("tok"), tpi.clone());
        assert!(
            matches!(e, Err(Rejection::InsufficientPower { what: "invite", .. })),
            "v{v}"
        );
        room.send(ALICE, types::THIRD_PARTY_INVITE, Some("tok"), tpi)
            .unwrap();

        let redeem = |mxid: &str, token: &str| json!({"membership": "invite", "third_party_invite": {"display_name": "c", "signed": {"mxid": mxid, "token": token, "signatures": {}}}});
        let no_signed =
            json!({"membership": "invite", "third_party_invite": {"display_name": "c"}});
        let e = room.send(ALICE, types::MEMBER, Some(CAROL), no_signed);
        assert!(matches!(e, Err(Rejection::ThirdPartyInvite(_))), "v{v}");
        let e = room.send(ALICE, types::MEMBER, Some(CAROL), redeem(EVE, "tok"));
        assert_eq!(
            e.unwrap_err(),
            Rejection::ThirdPartyInvite("`mxid` is not the invited user"),
            "v{v}"
        );
        let e = room.send(ALICE, types::MEMBER, Some(CAROL), redeem(CAROL, "other"));
        assert!(matches!(e, Err(Rejection::ThirdPartyInvite(_))), "v{v}");
        let e = room.send(BOB, types::MEMBER, Some(CAROL), redeem(CAROL, "tok"));
        assert!(
            matches!(e, Err(Rejection::ThirdPartyInvite(_))),
            "v{v}: only the inviter redeems"
        );
        // Without signature verification (a caller's job) nothing is accepted.
        let e = room.send(ALICE, types::MEMBER, Some(CAROL), redeem(CAROL, "tok"));
        assert_eq!(
            e.unwrap_err(),
            Rejection::ThirdPartyInvite("no signature matches the invite's public keys"),
            "v{v}"
        );
    }
}

// Rules 6, 8, 9.

#[test]
fn senders_must_be_joined_and_powerful_enough() {
    for v in all_versions() {
        let mut room = room_with_bob(v);
        let e = room.send(EVE, "m.room.message", None, json!({}));
        assert_eq!(
            e.unwrap_err(),
            Rejection::SenderNotJoined(EVE.into()),
            "v{v}"
        );
        room.send(BOB, "m.room.message", None, json!({})).unwrap();
        let e = room.state_event(BOB, "m.room.name", json!({"name": "x"}));
        assert!(
            matches!(
                e,
                Err(Rejection::InsufficientPower {
                    what: "required",
                    need: 50,
                    ..
                })
            ),
            "v{v}"
        );
        let users = users_with_admin(&room, &[]);
        room.state_event(
            ALICE,
            types::POWER_LEVELS,
            json!({"users": users, "events": {"m.room.message": 10}}),
        )
        .unwrap();
        let e = room.send(BOB, "m.room.message", None, json!({}));
        assert!(
            matches!(e, Err(Rejection::InsufficientPower { need: 10, .. })),
            "v{v}"
        );
    }
}

#[test]
fn user_state_keys_belong_to_their_user() {
    for v in all_versions() {
        let mut room = room_with_bob(v);
        let users = users_with_admin(&room, &[]);
        room.state_event(
            ALICE,
            types::POWER_LEVELS,
            json!({"users": users, "state_default": 0}),
        )
        .unwrap();
        let e = room.send(BOB, "org.example.status", Some(ALICE), json!({}));
        assert_eq!(
            e.unwrap_err(),
            Rejection::StateKeyOfOtherUser(ALICE.into()),
            "v{v}"
        );
        room.send(BOB, "org.example.status", Some(BOB), json!({}))
            .unwrap();
        room.send(BOB, "org.example.status", Some("@"), json!({}))
            .unwrap_err();
    }
}

// Rule 10: power levels.

#[test]
fn power_levels_content_is_validated() {
    for v in all_versions() {
        let mut room = room_with_bob(v);
        let e = room.state_event(ALICE, types::POWER_LEVELS, json!({"users": {"bob": 10}}));
        assert!(matches!(e, Err(Rejection::InvalidPowerLevels(_))), "v{v}");
        let stringy = json!({"users": users_with_admin(&room, &[]), "ban": "60", "events": {"m.room.name": "60"}});
        let e = room.state_event(ALICE, types::POWER_LEVELS, stringy);
        if room.version.integer_power_levels {
            assert!(matches!(e, Err(Rejection::InvalidPowerLevels(_))), "v{v}");
        } else {
            e.unwrap();
        }
    }
}

#[test]
fn power_level_changes_are_bounded_by_the_senders_power() {
    for v in all_versions() {
        let mut room = room_with_bob(v);
        room.member(CAROL, CAROL, "join").unwrap();
        let base = |room: &TestRoom, extra: &[(&str, i64)]| users_with_admin(room, extra);
        let users = base(&room, &[(BOB, 50), (CAROL, 50)]);
        room.state_event(
            ALICE,
            types::POWER_LEVELS,
            json!({"users": users, "events": {"m.room.topic": 80}}),
        )
        .unwrap();

        let change =
            |room: &mut TestRoom, content| room.state_event(BOB, types::POWER_LEVELS, content);
        // Bob may not raise anything above 50...
        let users = base(&room, &[(BOB, 50), (CAROL, 50)]);
        let e = change(
            &mut room,
            json!({"users": users.clone(), "ban": 60, "events": {"m.room.topic": 80}}),
        );
        assert!(
            matches!(e, Err(Rejection::PowerLevelChange { .. })),
            "v{v}: {e:?}"
        );
        // ...nor touch the 80 he does not have...
        let e = change(
            &mut room,
            json!({"users": users.clone(), "events": {"m.room.topic": 40}}),
        );
        assert!(
            matches!(e, Err(Rejection::PowerLevelChange { .. })),
            "v{v}: {e:?}"
        );
        // ...nor change Carol, his equal...
        let lower_carol = base(&room, &[(BOB, 50), (CAROL, 10)]);
        let e = change(
            &mut room,
            json!({"users": lower_carol, "events": {"m.room.topic": 80}}),
        );
        assert!(
            matches!(e, Err(Rejection::PowerLevelChange { .. })),
            "v{v}: {e:?}"
        );
        // ...nor promote anyone above himself.
        let promote = base(&room, &[(BOB, 50), (CAROL, 50), (EVE, 51)]);
        let e = change(
            &mut room,
            json!({"users": promote, "events": {"m.room.topic": 80}}),
        );
        assert!(
            matches!(e, Err(Rejection::PowerLevelChange { .. })),
            "v{v}: {e:?}"
        );
        // He may demote himself and add someone at his own level.
        let ok = base(&room, &[(BOB, 40), (CAROL, 50), (EVE, 40)]);
        change(
            &mut room,
            json!({"users": ok, "events": {"m.room.topic": 80}}),
        )
        .unwrap();
    }
}

#[test]
fn notifications_levels_are_checked_from_v6() {
    for v in all_versions() {
        let mut room = room_with_bob(v);
        let users = users_with_admin(&room, &[(BOB, 50)]);
        room.state_event(
            ALICE,
            types::POWER_LEVELS,
            json!({"users": users.clone(), "notifications": {"room": 80}}),
        )
        .unwrap();
        let e = room.state_event(
            BOB,
            types::POWER_LEVELS,
            json!({"users": users, "notifications": {"room": 10}}),
        );
        if room.version.notifications_power_levels {
            assert!(matches!(e, Err(Rejection::PowerLevelChange { .. })), "v{v}");
        } else {
            e.unwrap();
        }
    }
}

#[test]
fn v12_creators_have_infinite_power_and_stay_out_of_users() {
    let mut room = TestRoom::new("12", ALICE, json!({"additional_creators": [CAROL]}));
    room.state_event(ALICE, types::JOIN_RULES, json!({"join_rule": "public"}))
        .unwrap();
    room.member(BOB, BOB, "join").unwrap();
    room.member(CAROL, CAROL, "join").unwrap();
    let e = room.state_event(ALICE, types::POWER_LEVELS, json!({"users": {ALICE: 100}}));
    assert_eq!(
        e.unwrap_err(),
        Rejection::CreatorInPowerLevels(ALICE.into())
    );
    let e = room.state_event(ALICE, types::POWER_LEVELS, json!({"users": {CAROL: 100}}));
    assert_eq!(
        e.unwrap_err(),
        Rejection::CreatorInPowerLevels(CAROL.into())
    );
    // A creator sets any level, even above 100, and cannot be kicked by a 1000.
    room.state_event(
        ALICE,
        types::POWER_LEVELS,
        json!({"users": {BOB: 1000}, "events": {"m.room.name": 5000}}),
    )
    .unwrap();
    room.state_event(CAROL, "m.room.name", json!({"name": "n"}))
        .unwrap();
    let e = room.member(BOB, CAROL, "leave").unwrap_err();
    assert!(matches!(e, Rejection::TargetNotLower { .. }), "{e:?}");
    room.member(CAROL, BOB, "ban").unwrap();
}

#[test]
fn room_creator_has_100_without_power_levels() {
    for v in all_versions() {
        let mut room = TestRoom::new(v, ALICE, json!({}));
        room.state_event(ALICE, types::JOIN_RULES, json!({"join_rule": "public"}))
            .unwrap();
        room.member(BOB, BOB, "join").unwrap();
        // Without a power levels event, state_default is still 50: only the
        // creator, at 100, sets state or bans.
        let e = room.state_event(BOB, "m.room.topic", json!({"topic": "t"}));
        assert!(
            matches!(e, Err(Rejection::InsufficientPower { need: 50, .. })),
            "v{v}"
        );
        room.state_event(ALICE, "m.room.topic", json!({"topic": "t"}))
            .unwrap();
        assert!(room.member(BOB, ALICE, "ban").is_err(), "v{v}");
        room.member(ALICE, BOB, "ban").unwrap();
    }
}

// v1–v2: redactions.

#[test]
fn redaction_rule_only_in_v1_and_v2() {
    for v in all_versions() {
        let mut room = room_with_bob(v);
        let mut redaction = room.build(BOB, types::REDACTION, None, json!({}));
        redaction.redacts = Some("$other:a.example".into());
        redaction.event_id = "$r:b.example".into();
        let result = room.accept(redaction);
        if room.version.redaction_auth_rule {
            assert_eq!(result.unwrap_err(), Rejection::RedactionForbidden, "v{v}");
            let mut own = room.build(BOB, types::REDACTION, None, json!({}));
            own.redacts = Some("$mine:b.example".into());
            own.event_id = "$r2:b.example".into();
            room.accept(own).unwrap();
        } else {
            result.unwrap();
        }
    }
}

// Hostile input: arbitrary content, types, state keys and senders never
// make the auth rules panic (the cargo-fuzz target in fuzz/ goes further).

mod hostile {
    use proptest::prelude::*;
    use serde_json::Value as JsonValue;

    use super::*;

    fn json() -> impl Strategy<Value = JsonValue> {
        let leaf = prop_oneof![
            Just(JsonValue::Null),
            any::<bool>().prop_map(JsonValue::from),
            any::<i64>().prop_map(JsonValue::from),
            any::<f64>().prop_map(JsonValue::from),
            "[@!$a-z0-9:._]{0,12}".prop_map(JsonValue::from),
            prop::sample::select(vec![
                "join",
                "leave",
                "ban",
                "invite",
                "knock",
                "public",
                "restricted",
                "50",
                "1e3"
            ])
            .prop_map(JsonValue::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let keys = prop::sample::select(vec![
                "membership",
                "join_rule",
                "users",
                "events",
                "notifications",
                "ban",
                "kick",
                "invite",
                "redact",
                "state_default",
                "events_default",
                "users_default",
                "third_party_invite",
                "signed",
                "mxid",
                "token",
                "creator",
                "room_version",
                "additional_creators",
                "m.federate",
                "join_authorised_via_users_server",
                "public_key",
                "public_keys",
                "@alice:a.example",
            ]);
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(JsonValue::from),
                prop::collection::btree_map(keys, inner, 0..6).prop_map(|m| JsonValue::Object(
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn auth_rules_never_panic(
            version in prop::sample::select(ALL.iter().map(|v| v.id).collect::<Vec<_>>()),
            kind in prop::sample::select(vec![
                types::CREATE, types::MEMBER, types::POWER_LEVELS, types::JOIN_RULES,
                types::THIRD_PARTY_INVITE, types::ALIASES, types::REDACTION, "m.room.topic", "",
            ]),
            sender in prop::sample::select(vec![ALICE, BOB, EVE, "not a user", "@:", "@x:"]),
            state_key in prop::option::of(prop::sample::select(vec!["", ALICE, BOB, "@", "a.example", "tok"])),
            content in json(),
            drop_auth in any::<bool>(),
        ) {
            let mut room = room_with_bob(version);
            let mut event = room.build(sender, kind, state_key, content);
            if drop_auth {
                event.auth.clear();
            }
            let _ = room.check(&event);
        }
    }
}

#[test]
fn third_party_invite_is_accepted_when_the_caller_verifies_the_signature() {
    use crate::{auth::AuthState, check_against_state, test_room::TestEvent};

    struct Verified<'a>(&'a TestRoom);
    impl AuthState<TestEvent> for Verified<'_> {
        fn get(&self, kind: &str, key: &str) -> Option<TestEvent> {
            let id = self.0.state.get(&(kind.to_owned(), key.to_owned()))?;
            self.0.events.get(id).cloned()
        }
        fn verify_third_party_signed(&self, signed: &serde_json::Value, keys: &[&str]) -> bool {
            signed["signatures"]["id.example"]["ed25519:0"] == "sig" && keys == ["abc", "def"]
        }
    }
    for v in all_versions() {
        let mut room = room_with_bob(v);
        let tpi = json!({"public_key": "abc", "public_keys": [{"public_key": "def"}]});
        room.send(ALICE, types::THIRD_PARTY_INVITE, Some("tok"), tpi)
            .unwrap();
        let signed = json!({"mxid": CAROL, "token": "tok", "signatures": {"id.example": {"ed25519:0": "sig"}}});
        let content = json!({"membership": "invite", "third_party_invite": {"display_name": "c", "signed": signed}});
        let event = room.build(ALICE, types::MEMBER, Some(CAROL), content);
        assert_eq!(
            check_against_state(room.version, &event, &Verified(&room)),
            Ok(()),
            "v{v}"
        );
        // Banned targets stay out even with a valid signature.
        room.member(ALICE, CAROL, "ban").unwrap();
        let event = room.build(ALICE, types::MEMBER, Some(CAROL), event.content.clone());
        assert!(
            check_against_state(room.version, &event, &Verified(&room)).is_err(),
            "v{v}"
        );
    }
}
