//! The authorisation rules of the spec, for every room version.
//!
//! [`check_auth_events`] is what can be checked from the event and its own
//! auth events (rules 1–3); [`check_against_state`] is everything that
//! depends on a room state (rules 4–11). Receiving a PDU runs both; state
//! resolution's iterative auth checks run the second against the partially
//! resolved state.

use std::collections::HashSet;

use serde_json::Value as JsonValue;

use crate::{
    event::{Event, is_valid_user_id, server_of, types},
    power_levels::{Power, PowerLevels, RoomPower},
    rejection::Rejection,
    room_version::RoomVersion,
};

/// The room state an event is checked against.
pub trait AuthState<E> {
    /// The state event for `(event_type, state_key)`, if any.
    fn get(&self, event_type: &str, state_key: &str) -> Option<E>;

    /// Whether any signature in a third-party invite's `signed` object
    /// verifies with one of the public keys (base64 ed25519) of the
    /// `m.room.third_party_invite` event. Verifying needs cryptography this
    /// pure crate does not carry; the default says no, which rejects.
    fn verify_third_party_signed(&self, _signed: &JsonValue, _public_keys: &[&str]) -> bool {
        false
    }
}

impl<E, F: Fn(&str, &str) -> Option<E>> AuthState<E> for F {
    fn get(&self, event_type: &str, state_key: &str) -> Option<E> {
        self(event_type, state_key)
    }
}

/// The `(type, state_key)` pairs an event may cite as auth events (the
/// server-server spec's "auth events selection").
pub fn auth_types_for_event(
    version: &RoomVersion,
    event_type: &str,
    sender: &str,
    state_key: Option<&str>,
    content: &JsonValue,
) -> Vec<(String, String)> {
    if event_type == types::CREATE {
        return Vec::new();
    }
    let mut wanted = Vec::with_capacity(6);
    if !version.room_id_is_create_event {
        wanted.push((types::CREATE.to_owned(), String::new()));
    }
    wanted.push((types::POWER_LEVELS.to_owned(), String::new()));
    wanted.push((types::MEMBER.to_owned(), sender.to_owned()));
    if event_type == types::MEMBER
        && let Some(target) = state_key
    {
        if target != sender {
            wanted.push((types::MEMBER.to_owned(), target.to_owned()));
        }
        let membership = content.get("membership").and_then(JsonValue::as_str);
        // The selection lists `knock` for every version; before v7 a knock
        // is refused anyway.
        if matches!(membership, Some("join" | "invite" | "knock")) {
            wanted.push((types::JOIN_RULES.to_owned(), String::new()));
        }
        if membership == Some("invite")
            && let Some(token) = content
                .pointer("/third_party_invite/signed/token")
                .and_then(JsonValue::as_str)
        {
            wanted.push((types::THIRD_PARTY_INVITE.to_owned(), token.to_owned()));
        }
        if membership == Some("join")
            && version.restricted_joins
            && let Some(via) = content
                .get("join_authorised_via_users_server")
                .and_then(JsonValue::as_str)
            && !wanted.iter().any(|(t, k)| t == types::MEMBER && k == via)
        {
            wanted.push((types::MEMBER.to_owned(), via.to_owned()));
        }
    }
    wanted
}

/// Rules 1–3: the create event's own rules, and the event's auth events.
///
/// `create` is the room's create event: for v12 the one the room id names
/// (it is not among the auth events); before v12 it may be `None`, and is
/// then looked for among `auth_events`.
pub fn check_auth_events<E: Event>(
    version: &RoomVersion,
    event: &E,
    auth_events: &[E],
    create: Option<&E>,
) -> Result<(), Rejection> {
    if event.is_type(types::CREATE) {
        return check_create(version, event);
    }

    if version.room_id_is_create_event {
        let named = create.is_some_and(|create| {
            !create.rejected()
                && create.is_type(types::CREATE)
                && event.room_id().and_then(|r| r.strip_prefix('!'))
                    == create.event_id().strip_prefix('$')
        });
        if !named {
            return Err(Rejection::RoomIdNotCreateEvent);
        }
    }

    let allowed = auth_types_for_event(
        version,
        event.event_type(),
        event.sender(),
        event.state_key(),
        event.content(),
    );
    let mut seen = HashSet::with_capacity(auth_events.len());
    let mut has_create = false;
    for auth in auth_events {
        let key = (auth.event_type(), auth.state_key().unwrap_or(""));
        if !seen.insert(key) {
            return Err(Rejection::DuplicateAuthEvent(
                key.0.to_owned(),
                key.1.to_owned(),
            ));
        }
        if auth.state_key().is_none() || !allowed.iter().any(|(t, k)| t == key.0 && k == key.1) {
            return Err(Rejection::UnexpectedAuthEvent(
                key.0.to_owned(),
                key.1.to_owned(),
            ));
        }
        if auth.rejected() {
            return Err(Rejection::RejectedAuthEvent(auth.event_id().to_owned()));
        }
        if auth.room_id() != event.room_id() {
            return Err(Rejection::AuthEventFromOtherRoom(
                auth.event_id().to_owned(),
            ));
        }
        has_create |= auth.is_type(types::CREATE);
    }
    if !version.room_id_is_create_event && !has_create {
        return Err(Rejection::MissingCreateAuthEvent);
    }
    Ok(())
}

/// Rule 1: the create event.
fn check_create<E: Event>(version: &RoomVersion, event: &E) -> Result<(), Rejection> {
    if !event.prev_events().is_empty() {
        return Err(Rejection::CreateHasPrevEvents);
    }
    if version.room_id_is_create_event {
        if event.room_id().is_some() {
            return Err(Rejection::CreateHasRoomId);
        }
    } else if event.room_id().and_then(server_of) != server_of(event.sender()) {
        return Err(Rejection::CreateRoomIdOnOtherServer);
    }
    if let Some(room_version) = event.content().get("room_version") {
        let known = room_version
            .as_str()
            .is_some_and(|v| RoomVersion::from_id(v).is_some());
        if !known {
            return Err(Rejection::UnknownRoomVersion(room_version.to_string()));
        }
    }
    if version.creator_in_content && event.content().get("creator").is_none() {
        return Err(Rejection::CreateWithoutCreator);
    }
    if version.infinite_creator_power
        && let Some(extra) = event.content().get("additional_creators")
    {
        let valid = extra.as_array().is_some_and(|users| {
            users
                .iter()
                .all(|u| u.as_str().is_some_and(is_valid_user_id))
        });
        if !valid {
            return Err(Rejection::InvalidAdditionalCreators);
        }
    }
    Ok(())
}

/// Rules 4–11: everything checked against the room state before the event.
pub fn check_against_state<E: Event>(
    version: &RoomVersion,
    event: &E,
    state: &impl AuthState<E>,
) -> Result<(), Rejection> {
    if event.is_type(types::CREATE) {
        // Fully decided by rule 1.
        return Ok(());
    }
    let create = state.get(types::CREATE, "");

    // Rule 4: m.federate.
    if let Some(create) = &create
        && create.content().get("m.federate") == Some(&JsonValue::Bool(false))
        && server_of(event.sender()) != server_of(create.sender())
    {
        return Err(Rejection::NotFederated);
    }

    // v1–v5: m.room.aliases.
    if version.special_case_aliases && event.is_type(types::ALIASES) {
        return match event.state_key() {
            Some(key) if Some(key) == server_of(event.sender()) => Ok(()),
            _ => Err(Rejection::AliasesStateKey),
        };
    }

    let power_levels = state.get(types::POWER_LEVELS, "");
    let power = RoomPower::new(create.as_ref(), power_levels.as_ref(), version);
    let sender_power = power.of(event.sender());
    let membership_of = |user: &str| {
        state
            .get(types::MEMBER, user)
            .and_then(|m| m.membership().map(str::to_owned))
            .unwrap_or_else(|| "leave".to_owned())
    };

    // Rule 5: membership.
    if event.is_type(types::MEMBER) {
        return check_member(
            version,
            event,
            state,
            create.as_ref(),
            &power,
            &membership_of,
        );
    }

    // Rule 6.
    if membership_of(event.sender()) != "join" {
        return Err(Rejection::SenderNotJoined(event.sender().to_owned()));
    }

    // Rule 7.
    if event.is_type(types::THIRD_PARTY_INVITE) {
        return require(sender_power, power.levels.invite, "invite");
    }

    // Rule 8.
    let needed = power
        .levels
        .required_for(event.event_type(), event.state_key().is_some());
    require(sender_power, needed, "required")?;

    // Rule 9.
    if let Some(key) = event.state_key()
        && key.starts_with('@')
        && key != event.sender()
    {
        return Err(Rejection::StateKeyOfOtherUser(key.to_owned()));
    }

    // Rule 10.
    if event.is_type(types::POWER_LEVELS) {
        return check_power_levels(version, event, power_levels.as_ref(), &power, sender_power);
    }

    // v1–v2: m.room.redaction.
    if version.redaction_auth_rule && event.is_type(types::REDACTION) {
        if sender_power >= Power::Level(power.levels.redact) {
            return Ok(());
        }
        return match event.redacts() {
            Some(target) if server_of(target) == server_of(event.event_id()) => Ok(()),
            _ => Err(Rejection::RedactionForbidden),
        };
    }

    Ok(())
}

fn require(have: Power, need: i64, what: &'static str) -> Result<(), Rejection> {
    if have >= Power::Level(need) {
        Ok(())
    } else {
        Err(Rejection::InsufficientPower { what, have, need })
    }
}

/// Rule 5: `m.room.member` events.
fn check_member<E: Event>(
    version: &RoomVersion,
    event: &E,
    state: &impl AuthState<E>,
    create: Option<&E>,
    power: &RoomPower,
    membership_of: &dyn Fn(&str) -> String,
) -> Result<(), Rejection> {
    let (Some(target), Some(membership)) = (event.state_key(), event.membership()) else {
        return Err(Rejection::MemberWithoutMembership);
    };
    let sender = event.sender();
    let sender_membership = membership_of(sender);
    let target_membership = membership_of(target);
    let sender_power = power.of(sender);
    let join_rule = state
        .get(types::JOIN_RULES, "")
        .and_then(|e| e.content_str("join_rule").map(str::to_owned))
        .unwrap_or_else(|| "invite".to_owned());

    match membership {
        "join" => {
            // 5.3.1: the creator's own first join, right after the create event.
            if let Some(create) = create
                && event.prev_events() == [create.short_id()]
            {
                let creator = if version.creator_in_content {
                    create.content_str("creator")
                } else {
                    Some(create.sender())
                };
                if creator == Some(target) {
                    return Ok(());
                }
            }
            if sender != target {
                return Err(Rejection::JoinForOther {
                    sender: sender.to_owned(),
                    target: target.to_owned(),
                });
            }
            if sender_membership == "ban" {
                return Err(Rejection::Banned(sender.to_owned()));
            }
            let already_in = matches!(sender_membership.as_str(), "join" | "invite");
            match join_rule.as_str() {
                "invite" => return join_if(already_in, &join_rule),
                "knock" if version.knocking => return join_if(already_in, &join_rule),
                "restricted" if version.restricted_joins => {}
                "knock_restricted" if version.knock_restricted => {}
                "public" => return Ok(()),
                _ => return Err(Rejection::JoinRuleForbids(join_rule)),
            }
            // 5.3.5: restricted and knock_restricted.
            if already_in {
                return Ok(());
            }
            let via = event
                .content_str("join_authorised_via_users_server")
                .unwrap_or_default();
            let via_can_invite =
                membership_of(via) == "join" && power.of(via) >= Power::Level(power.levels.invite);
            if via_can_invite {
                Ok(())
            } else {
                Err(Rejection::InvalidAuthorisingUser(via.to_owned()))
            }
        }
        "invite" => {
            if let Some(third_party) = event.content().get("third_party_invite") {
                return check_third_party_invite(event, third_party, state, &target_membership);
            }
            if sender_membership != "join" {
                return Err(Rejection::SenderNotJoined(sender.to_owned()));
            }
            if matches!(target_membership.as_str(), "join" | "ban") {
                return Err(Rejection::InviteTargetMembership {
                    target: target.to_owned(),
                    membership: target_membership,
                });
            }
            require(sender_power, power.levels.invite, "invite")
        }
        "leave" => {
            if sender == target {
                let can_leave = matches!(sender_membership.as_str(), "invite" | "join")
                    || (version.knocking && sender_membership == "knock");
                return if can_leave {
                    Ok(())
                } else {
                    Err(Rejection::CannotLeave {
                        user: sender.to_owned(),
                        membership: sender_membership,
                    })
                };
            }
            if sender_membership != "join" {
                return Err(Rejection::SenderNotJoined(sender.to_owned()));
            }
            if target_membership == "ban" {
                require(sender_power, power.levels.ban, "ban")?;
            }
            require(sender_power, power.levels.kick, "kick")?;
            target_below_sender(sender_power, power.of(target))
        }
        "ban" => {
            if sender_membership != "join" {
                return Err(Rejection::SenderNotJoined(sender.to_owned()));
            }
            require(sender_power, power.levels.ban, "ban")?;
            target_below_sender(sender_power, power.of(target))
        }
        "knock" if version.knocking => {
            let knockable = join_rule == "knock"
                || (version.knock_restricted && join_rule == "knock_restricted");
            if !knockable {
                return Err(Rejection::KnockNotAllowed(join_rule));
            }
            if sender != target {
                return Err(Rejection::KnockForOther);
            }
            if matches!(sender_membership.as_str(), "ban" | "invite" | "join") {
                return Err(Rejection::KnockFromMembership(sender_membership));
            }
            Ok(())
        }
        other => Err(Rejection::UnknownMembership(other.to_owned())),
    }
}

fn join_if(already_in: bool, join_rule: &str) -> Result<(), Rejection> {
    if already_in {
        Ok(())
    } else {
        Err(Rejection::JoinRuleForbids(join_rule.to_owned()))
    }
}

fn target_below_sender(sender: Power, target: Power) -> Result<(), Rejection> {
    if target < sender {
        Ok(())
    } else {
        Err(Rejection::TargetNotLower { sender, target })
    }
}

/// Rule 5.4.1: an invite that redeems a third-party invite.
fn check_third_party_invite<E: Event>(
    event: &E,
    third_party: &JsonValue,
    state: &impl AuthState<E>,
    target_membership: &str,
) -> Result<(), Rejection> {
    use Rejection::ThirdPartyInvite as Tpi;
    if target_membership == "ban" {
        return Err(Tpi("the invited user is banned"));
    }
    let signed = third_party.get("signed").ok_or(Tpi("no `signed` object"))?;
    let (Some(mxid), Some(token)) = (
        signed.get("mxid").and_then(JsonValue::as_str),
        signed.get("token").and_then(JsonValue::as_str),
    ) else {
        return Err(Tpi("`signed` lacks `mxid` or `token`"));
    };
    if Some(mxid) != event.state_key() {
        return Err(Tpi("`mxid` is not the invited user"));
    }
    let invite = state
        .get(types::THIRD_PARTY_INVITE, token)
        .ok_or(Tpi("no m.room.third_party_invite for this token"))?;
    if invite.sender() != event.sender() {
        return Err(Tpi("the sender did not send the third-party invite"));
    }
    let mut keys: Vec<&str> = Vec::new();
    if let Some(key) = invite.content_str("public_key") {
        keys.push(key);
    }
    if let Some(JsonValue::Array(list)) = invite.content().get("public_keys") {
        keys.extend(
            list.iter()
                .filter_map(|k| k.get("public_key").and_then(JsonValue::as_str)),
        );
    }
    if state.verify_third_party_signed(signed, &keys) {
        Ok(())
    } else {
        Err(Tpi("no signature matches the invite's public keys"))
    }
}

/// Rule 10: `m.room.power_levels` changes.
fn check_power_levels<E: Event>(
    version: &RoomVersion,
    event: &E,
    current: Option<&E>,
    power: &RoomPower,
    sender_power: Power,
) -> Result<(), Rejection> {
    let new = PowerLevels::parse(event.content(), version)
        .map_err(|e| Rejection::InvalidPowerLevels(e.0))?;
    if let Some(creator) = power
        .creators
        .all
        .iter()
        .find(|c| new.users.contains_key(*c))
    {
        return Err(Rejection::CreatorInPowerLevels(creator.clone()));
    }
    let Some(current) = current else {
        return Ok(());
    };
    let old_content = current.content();
    let new_content = event.content();
    let old = PowerLevels::from_event(Some(current), version);
    let above = |level: i64| Power::Level(level) > sender_power;
    let change = |field: &str, reason: &str| Rejection::PowerLevelChange {
        field: field.to_owned(),
        reason: reason.to_owned(),
    };

    // 10.6: the top-level levels that were added, changed or removed.
    let fields = [
        ("users_default", old.users_default, new.users_default),
        ("events_default", old.events_default, new.events_default),
        ("state_default", old.state_default, new.state_default),
        ("ban", old.ban, new.ban),
        ("kick", old.kick, new.kick),
        ("invite", old.invite, new.invite),
        ("redact", old.redact, new.redact),
    ];
    for (field, old_level, new_level) in fields {
        let altered = old_content.get(field).is_some() != new_content.get(field).is_some()
            || old_level != new_level;
        if !altered {
            continue;
        }
        if above(old_level) {
            return Err(change(field, "its current value is above your power"));
        }
        if above(new_level) {
            return Err(change(field, "the new value is above your power"));
        }
    }

    // 10.7 and 10.8: `events`, and `notifications` from v6.
    let mut maps = vec![("events", &old.events, &new.events)];
    if version.notifications_power_levels {
        maps.push(("notifications", &old.notifications, &new.notifications));
    }
    for (name, old_map, new_map) in maps {
        for (key, old_level) in old_map {
            if new_map.get(key) != Some(old_level) && above(*old_level) {
                return Err(change(
                    &format!("{name}.{key}"),
                    "its current value is above your power",
                ));
            }
        }
        for (key, new_level) in new_map {
            if old_map.get(key) != Some(new_level) && above(*new_level) {
                return Err(change(
                    &format!("{name}.{key}"),
                    "the new value is above your power",
                ));
            }
        }
    }

    // 10.9 and 10.10: `users`.
    for (user, old_level) in &old.users {
        if new.users.get(user) != Some(old_level)
            && user != event.sender()
            && Power::Level(*old_level) >= sender_power
        {
            return Err(change(
                &format!("users.{user}"),
                "that user's power is not below yours",
            ));
        }
    }
    for (user, new_level) in &new.users {
        if old.users.get(user) != Some(new_level) && above(*new_level) {
            return Err(change(
                &format!("users.{user}"),
                "the new value is above your power",
            ));
        }
    }
    Ok(())
}
