//! What other servers' membership handshakes get from this one: the
//! template of `make_join`, `make_leave` and `make_knock` (checked on a
//! stand-in against the current state, so a server learns at once that its
//! user may not), the authorising user of a restricted join, and the checks
//! of a `send_join`, `send_leave` or `send_knock` body.

use ruma::{ServerName, UserId};
use serde_json::{Value as JsonValue, json};

use super::incoming::{Outcome, RoomContext, dag::Placement, parse::parse_pdu};
use crate::{Error, Result, Services, rooms::send::NewEvent};

/// A member event another server handed us, placed.
pub(crate) struct TakenMembership {
    pub room: RoomContext,
    pub short: conduit_state_res::ShortEventId,
    /// The event with our signature added (a restricted join we authorised).
    pub countersigned: Option<ruma::CanonicalJsonObject>,
}

impl Services {
    /// The template `make_join`, `make_leave` and `make_knock` hand out: a
    /// member event of `user_id` (a user of `origin`) with `membership`,
    /// checked against the room's current state on a stand-in, so a
    /// server learns at once that its user may not.
    pub(crate) fn membership_template(
        &self,
        origin: &ServerName,
        room_id: &str,
        user_id: &UserId,
        versions: &[String],
        membership: &str,
    ) -> Result<JsonValue> {
        if user_id.server_name() != origin {
            return Err(Error::forbidden(
                "The user does not belong to the asking server.",
            ));
        }
        if !self.is_resident(room_id)? {
            return Err(Error::not_found("This server is not in the room."));
        }
        let room = self.served_room(room_id, origin)?;
        if membership != "leave" {
            let asked: Vec<&str> = if versions.is_empty() {
                vec!["1"]
            } else {
                versions.iter().map(String::as_str).collect()
            };
            if !asked.contains(&room.record.version.as_str()) {
                return Err(Error::new(
                    crate::ErrorCode::IncompatibleRoomVersion,
                    format!(
                        "The room is of version {}, which the asking server does not support.",
                        room.record.version
                    ),
                ));
            }
        }
        let head = self.rooms.head(room.record.short)?;
        let state = self.rooms.state_map(&self.state_snapshots, &head)?;
        let mut content = json!({ "membership": membership });
        // The authorising user goes in before the auth events are chosen:
        // their member event is one of them.
        if membership == "join"
            && let Some(authoriser) = self.restricted_join_authoriser(&room, &state, user_id)?
        {
            content["join_authorised_via_users_server"] = authoriser.into();
        }
        let (mut template, _) = self.event_template(
            room_id,
            room.version,
            &head,
            &state,
            user_id,
            NewEvent {
                kind: "m.room.member",
                state_key: Some(user_id.as_str()),
                content,
            },
        )?;
        template["origin"] = origin.as_str().into();
        let mut probe = template.clone();
        probe["event_id"] = format!("$probe-{}", crate::utils::random_string(12)).into();
        let probe = crate::rooms::pdu::Pdu::from_json(u64::MAX, probe, &self.short_ids)?;
        let lookup = |kind: &str, key: &str| self.state_event(&state, kind, key).ok().flatten();
        conduit_state_res::check_against_state(room.version, &probe, &lookup)
            .map_err(|r| Error::forbidden(format!("Not allowed: {r}.")))?;
        Ok(json!({ "room_version": room.record.version, "event": template }))
    }

    /// For a join into a restricted room by a user not yet invited: one of
    /// our users who may invite, when the user is joined to a room the join
    /// rule allows (as this server sees it). `None` when the room is not
    /// restricted or the user is invited already.
    pub(crate) fn restricted_join_authoriser(
        &self,
        room: &super::incoming::RoomContext,
        state: &conduit_state_res::StateMap,
        user_id: &UserId,
    ) -> Result<Option<String>> {
        let Some(rules) = self.state_event(state, "m.room.join_rules", "")? else {
            return Ok(None);
        };
        let rule = rules.content.get("join_rule").and_then(JsonValue::as_str);
        let restricted = match rule {
            Some("restricted") => room.version.restricted_joins,
            Some("knock_restricted") => room.version.knock_restricted,
            _ => false,
        };
        let membership = |state: &conduit_state_res::StateMap, user: &str| -> Result<String> {
            Ok(self
                .state_event(state, "m.room.member", user)?
                .map(|m| crate::rooms::membership::membership_of(&m).to_owned())
                .unwrap_or_else(|| "leave".to_owned()))
        };
        if !restricted
            || matches!(
                membership(state, user_id.as_str())?.as_str(),
                "join" | "invite"
            )
        {
            return Ok(None);
        }
        let allowed_rooms = rules
            .content
            .get("allow")
            .and_then(JsonValue::as_array)
            .map(|allow| {
                allow
                    .iter()
                    .filter(|a| {
                        a.get("type").and_then(JsonValue::as_str) == Some("m.room_membership")
                    })
                    .filter_map(|a| a.get("room_id").and_then(JsonValue::as_str))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let mut member_of_allowed = false;
        for allowed in allowed_rooms {
            if let Some(record) = self.rooms.room(allowed)?
                && membership(&*self.current_state(&record)?, user_id.as_str())? == "join"
            {
                member_of_allowed = true;
                break;
            }
        }
        if !member_of_allowed {
            return Err(Error::new(
                crate::ErrorCode::UnableToGrantJoin,
                "The user is not in any room this server knows of that the join rule allows.",
            ));
        }
        let power = self.room_power(&room.record)?;
        let invite_level = conduit_state_res::Power::Level(power.levels.invite);
        for (&key, &event) in state.iter() {
            let (kind, member) = self.short_ids.state_key(key)?;
            if kind == "m.room.member"
                && super::user_server(&member) == Some(self.config.server_name.as_ref())
                && power.of(&member) >= invite_level
                && let Some(pdu) = self.rooms.pdu(event, &self.short_ids)?
                && crate::rooms::membership::membership_of(&pdu) == "join"
            {
                return Ok(Some(member));
            }
        }
        Err(Error::new(
            crate::ErrorCode::UnableToAuthoriseJoin,
            "No user of this server may let the user in.",
        ))
    }

    /// Takes a signed member event of a user of `origin` (`send_join`,
    /// `send_leave`, `send_knock`): checks it is that user's own with
    /// `membership`, adds our signature to a restricted join one of our
    /// users authorises (it does not change the event's id), verifies and
    /// places it. The room, the event's short id, and the event as we
    /// countersigned it, if we did.
    pub(crate) async fn take_membership(
        &self,
        origin: &ServerName,
        room_id: &str,
        event_id: &str,
        raw: &JsonValue,
        membership: &str,
    ) -> Result<TakenMembership> {
        let room = self.served_room(room_id, origin)?;
        let mut parsed = parse_pdu(raw, &room.rules)?;
        super::incoming::check_room_of(&parsed, &room)?;
        self.check_own_membership(&parsed, raw, event_id, origin, membership)?;
        let authorised_here = membership == "join"
            && raw
                .pointer("/content/join_authorised_via_users_server")
                .and_then(JsonValue::as_str)
                .and_then(super::user_server)
                == Some(self.config.server_name.as_ref());
        if authorised_here {
            // Only a join make_join would have authorised: the user must be
            // in a room the join rule allows (a server could skip make_join).
            let state = self.current_state(&room.record)?;
            let sender = parsed.text("sender").unwrap_or_default();
            let user = <&UserId>::try_from(sender)
                .map_err(|_| Error::bad_json("The sender is not a user id."))?;
            self.restricted_join_authoriser(&room, &state, user)?;
            self.server_keys
                .sign_event(&mut parsed.object, &room.rules.redaction)?;
        }
        self.verify_pdu(&mut parsed, &room.rules).await?;
        let countersigned = authorised_here.then(|| parsed.object.clone());
        let outcome = {
            let _lock = self.rooms.lock(room.record.short).await;
            self.place_in_dag(origin, &room, parsed, Placement::Live)
                .await?
        };
        let refused =
            |reason: &str| Error::forbidden(format!("The {membership} is not allowed: {reason}."));
        let short = self
            .short_ids
            .event_short(event_id)?
            .ok_or_else(|| Error::internal("placed event without short id"))?;
        match outcome {
            Outcome::Accepted => {}
            // Sent again: only an event that took its place in the room
            // counts (not one rejected, soft-failed or kept as an outlier).
            Outcome::AlreadyKnown => {
                let placed = self.rooms.meta(short)?.is_some_and(|m| m.count != 0);
                if !placed || self.is_rejected(short)? {
                    return Err(refused("it was refused before"));
                }
            }
            Outcome::Rejected(reason) | Outcome::SoftFailed(reason) => {
                return Err(refused(&reason));
            }
        }
        Ok(TakenMembership {
            room,
            short,
            countersigned,
        })
    }

    /// A room this server is in, for a request of `origin` about it (the
    /// room's server ACL must let `origin` in).
    pub(crate) fn served_room(&self, room_id: &str, origin: &ServerName) -> Result<RoomContext> {
        let room = self.room_context(room_id)?;
        self.check_server_acl(&room.record, origin)?;
        Ok(room)
    }

    /// Checks that a `send_join`/`send_leave`/`send_knock` body is the
    /// named event, the member event of a user of `origin` about themself,
    /// with `membership`.
    pub(crate) fn check_own_membership(
        &self,
        parsed: &super::incoming::parse::Parsed,
        raw: &JsonValue,
        event_id: &str,
        origin: &ServerName,
        membership: &str,
    ) -> Result<()> {
        if parsed.event_id != event_id {
            return Err(Error::bad_json("The event id does not match the event."));
        }
        let sender = parsed.text("sender").unwrap_or_default();
        if parsed.text("type") != Some("m.room.member")
            || parsed.text("state_key") != Some(sender)
            || raw
                .pointer("/content/membership")
                .and_then(JsonValue::as_str)
                != Some(membership)
            || super::user_server(sender) != Some(origin)
        {
            return Err(Error::bad_json(format!(
                "send_{membership} takes the {membership} of a user of the sending server."
            )));
        }
        Ok(())
    }
}
