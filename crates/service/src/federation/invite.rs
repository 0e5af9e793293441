//! Invites and leaves across servers.
//!
//! - Inviting a user of another server: the invite is built and checked
//!   here, countersigned by the invitee's server (`PUT /v2/invite`), then
//!   appended and sent to the room.
//! - Being invited from another server to a room this server is not in:
//!   the invite is checked, countersigned and kept with the room's stripped
//!   state (`remote_invites`), which sync shows.
//! - Rejecting such an invite (or leaving a room this server is not in):
//!   `make_leave` / `send_leave` through the inviting server. Other servers
//!   do the same with us: this server serves `make_leave` and `send_leave`.

use ruma::{CanonicalJsonValue, OwnedServerName, ServerName, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value as JsonValue, json};

use super::{
    incoming::{outliers::urlencode, parse::parse_pdu},
    keys::signed_by,
};
use crate::{
    Error, ErrorCode, Result, Services,
    rooms::send::{NewEvent, version_rules},
    tables, utils,
};

/// An invite to a room this server is not in.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct RemoteInvite {
    /// The invite event, countersigned by us; once rejected, the leave
    /// event (`null` when no server took it).
    pub event: JsonValue,
    pub room_version: String,
    /// The room's stripped state, as the inviting server gave it.
    pub invite_state: Vec<JsonValue>,
    /// Stream position of the invite (or of its end).
    pub position: u64,
    /// Servers that know the room: the inviter's, or the one that took a
    /// knock. A rejection (or a join) goes through them first.
    #[serde(default)]
    pub via: Vec<OwnedServerName>,
}

/// Stripped state events kept at most per invite.
const MAX_INVITE_STATE: usize = 50;

impl Services {
    /// Invites `target`, a user of another server, to a room we are in;
    /// `content` is the member event's (`membership: invite`, a reason).
    pub async fn invite_remote_user(
        &self,
        room_id: &str,
        sender: &UserId,
        target: &UserId,
        content: JsonValue,
    ) -> Result<crate::rooms::pdu::Pdu> {
        let room = self
            .rooms
            .room(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room."))?;
        let (_, rules) = version_rules(&room.version)?;
        let _lock = self.rooms.lock(room.short).await;
        let head = self.rooms.head(room.short)?;
        let (pdu, state) = self.build_checked_event(
            room_id,
            &room,
            &head,
            sender,
            NewEvent {
                kind: "m.room.member",
                state_key: Some(target.as_str()),
                content,
            },
        )?;
        let mut invite_state = self.stripped_state(&state)?;
        if let Some(own) = self.state_event(&state, "m.room.member", sender.as_str())? {
            invite_state.push(stripped(&own.json));
        }
        let server = target.server_name();
        let body = json!({
            "room_version": room.version,
            "event": self.federation_pdu_json(&pdu),
            "invite_room_state": invite_state,
        });
        let path = format!(
            "/_matrix/federation/v2/invite/{}/{}",
            urlencode(room_id),
            urlencode(&pdu.event_id)
        );
        let answer = self
            .federation_request(server, http::Method::PUT, &path, Some(&body), 1 << 20)
            .await
            .map_err(|e| e.into_client_error(server))?;
        let signed = answer
            .get("event")
            .ok_or_else(|| Error::bad_json(format!("{server} answered the invite without it.")))?;
        // Our invite with their signature: nothing else of their copy.
        let merged = super::with_their_signatures(&self.federation_pdu_json(&pdu), signed);
        let parsed = parse_pdu(&merged, &rules)?;
        if parsed.event_id != pdu.event_id {
            return Err(Error::bad_json(format!("{server} changed the invite.")));
        }
        let key_ids: Vec<String> = parsed
            .object
            .get("signatures")
            .and_then(CanonicalJsonValue::as_object)
            .and_then(|s| s.get(server.as_str()))
            .and_then(CanonicalJsonValue::as_object)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        let keys = self
            .server_verify_keys(server, &key_ids, utils::now_ms())
            .await?;
        let redacted = ruma::canonical_json::redact(parsed.object.clone(), &rules.redaction, None)
            .map_err(|e| Error::bad_json(e.to_string()))?;
        if !keys
            .iter()
            .any(|(id, key)| signed_by(&redacted, server.as_str(), id, &key.encode()))
        {
            return Err(Error::forbidden(format!(
                "{server} did not countersign the invite."
            )));
        }
        let countersigned =
            crate::rooms::pdu::Pdu::from_json(pdu.short, parsed.stored_json()?, &self.short_ids)?;
        self.append_local_event(room_id, &room, &head, &state, countersigned, None)
            .await
    }

    /// The stripped state an invitee gets to see of a room.
    pub(crate) fn stripped_state(
        &self,
        state: &conduit_state_res::StateMap,
    ) -> Result<Vec<JsonValue>> {
        let mut events = Vec::new();
        for kind in crate::sync::INVITE_STATE {
            if let Some(pdu) = self.state_event(state, kind, "")? {
                events.push(stripped(&pdu.json));
            }
        }
        Ok(events)
    }

    /// `PUT /v2/invite/{roomId}/{eventId}` from `origin`: checks the invite
    /// of one of our users, countersigns it, and answers with it.
    pub async fn receive_invite(
        &self,
        origin: &ServerName,
        room_id: &str,
        event_id: &str,
        body: &JsonValue,
    ) -> Result<JsonValue> {
        let version = body
            .get("room_version")
            .and_then(JsonValue::as_str)
            .unwrap_or("1");
        let (_, rules) = version_rules(version).map_err(|_| {
            Error::new(
                ErrorCode::IncompatibleRoomVersion,
                format!("This server does not support room version {version}."),
            )
        })?;
        let raw = body
            .get("event")
            .ok_or_else(|| Error::bad_json("The invite is missing."))?;
        let mut parsed = parse_pdu(raw, &rules)?;
        if parsed.event_id != event_id {
            return Err(Error::bad_json("The event id does not match the event."));
        }
        let target = parsed.text("state_key").unwrap_or_default().to_owned();
        let sender = parsed.text("sender").unwrap_or_default().to_owned();
        let membership = raw
            .pointer("/content/membership")
            .and_then(JsonValue::as_str);
        if parsed.text("type") != Some("m.room.member")
            || membership != Some("invite")
            || parsed.text("room_id") != Some(room_id)
        {
            return Err(Error::bad_json("This is not an invite to the room."));
        }
        if super::user_server(&sender) != Some(origin) {
            return Err(Error::forbidden(
                "The inviter is not a user of the sending server.",
            ));
        }
        let target_user = <&UserId>::try_from(target.as_str())
            .map_err(|_| Error::bad_json("The invitee is not a user id."))?;
        if target_user.server_name() != self.config.server_name
            || !self.users.exists(target_user)?
        {
            return Err(Error::not_found("No such user on this server."));
        }
        self.verify_pdu(&mut parsed, &rules).await?;
        self.server_keys
            .sign_event(&mut parsed.object, &rules.redaction)?;
        let stored = parsed.stored_json()?;

        // A room we are in hears of the invite through `/send` as well; it
        // is placed in the DAG then. Otherwise it waits here for the user.
        if !self.is_resident(room_id)? {
            let invite_state: Vec<JsonValue> = body
                .get("invite_room_state")
                .and_then(JsonValue::as_array)
                .map(|list| list.iter().take(MAX_INVITE_STATE).map(stripped).collect())
                .unwrap_or_default();
            self.store_remote_membership(
                target_user,
                room_id,
                "invite",
                RemoteInvite {
                    event: stored,
                    room_version: version.to_owned(),
                    invite_state,
                    position: 0,
                    via: vec![origin.to_owned()],
                },
            )?;
        }
        let mut answer = parsed.object;
        if !rules.event_format.require_event_id {
            answer.remove("event_id");
        }
        Ok(json!({ "event": answer }))
    }

    /// Records an invite (or knock) from elsewhere, or its end, as the
    /// user's `membership` at a new stream position, so their sync sees it.
    pub(crate) fn store_remote_membership(
        &self,
        user: &UserId,
        room_id: &str,
        membership: &str,
        mut record: RemoteInvite,
    ) -> Result<()> {
        self.stream.write(
            &self.db,
            self.db.batch(),
            None,
            |batch, position| {
                record.position = position;
                batch.put(&tables::REMOTE_INVITES, (user.as_str(), room_id), &record)?;
                batch.put(
                    &tables::USER_ROOMS,
                    (user.as_str(), room_id),
                    &membership.to_owned(),
                )?;
                Ok(())
            },
            |position| self.stream.mark_user(user.as_str(), position),
        )?;
        Ok(())
    }

    /// An invite from elsewhere to a room this server is not in (or, once
    /// rejected, the leave that ended it).
    pub fn remote_invite(&self, user: &UserId, room_id: &str) -> Result<Option<RemoteInvite>> {
        Ok(self
            .db
            .get(&tables::REMOTE_INVITES, (user.as_str(), room_id))?)
    }

    /// Forgets a remote invite once the user joined the room.
    pub(crate) fn drop_remote_invite(&self, user: &UserId, room_id: &str) -> Result<()> {
        let mut batch = self.db.batch();
        batch.delete(&tables::REMOTE_INVITES, (user.as_str(), room_id))?;
        self.db.write(batch)?;
        Ok(())
    }

    /// Rejects an invite to (or withdraws a knock on) a room this server is
    /// not in: a leave through the servers that know the room
    /// (`make_leave`, `send_leave`).
    pub async fn reject_remote_invite(&self, user: &UserId, room_id: &str) -> Result<()> {
        let invite = self
            .remote_invite(user, room_id)?
            .ok_or_else(|| Error::not_found("You are not invited to this room."))?;
        let mut servers = invite.via.clone();
        servers.extend(self.candidate_servers(room_id, &[]));
        let mut result = Err(Error::not_found("No server to leave the room through."));
        for server in servers {
            result = self.leave_via(&server, room_id, user).await;
            if result.is_ok() {
                break;
            }
        }
        // The user asked to leave; an unreachable server must not keep the
        // invite in their list for ever. Sync then shows the leave event
        // when there is one.
        let leave = result.unwrap_or_else(|e| {
            tracing::info!(room_id, "left locally only: {e}");
            JsonValue::Null
        });
        self.store_remote_membership(
            user,
            room_id,
            "leave",
            RemoteInvite {
                event: leave,
                ..invite
            },
        )
    }

    /// A leave through `server`; the leave event as sent.
    async fn leave_via(
        &self,
        server: &ServerName,
        room_id: &str,
        user: &UserId,
    ) -> Result<JsonValue> {
        let signed = self
            .make_membership(server, room_id, user, "leave", serde_json::Map::new())
            .await?;
        self.send_membership(server, room_id, "v2", "leave", &signed, 1 << 20)
            .await?;
        let mut leave = signed.event;
        leave["event_id"] = signed.event_id.into();
        Ok(leave)
    }

    /// `GET /make_leave/{roomId}/{userId}`: a leave template for a user of
    /// `origin` who is invited to, knocking on or in a local room.
    pub fn make_leave(
        &self,
        origin: &ServerName,
        room_id: &str,
        user_id: &UserId,
    ) -> Result<JsonValue> {
        self.membership_template(origin, room_id, user_id, &[], "leave")
    }

    /// `PUT /send_leave/{roomId}/{eventId}`: takes a signed leave of a user
    /// of `origin`.
    pub async fn send_leave(
        &self,
        origin: &ServerName,
        room_id: &str,
        event_id: &str,
        raw: &JsonValue,
    ) -> Result<JsonValue> {
        self.take_membership(origin, room_id, event_id, raw, "leave")
            .await?;
        Ok(json!({}))
    }
}

/// A state event in the stripped form invitees see.
pub fn stripped(event: &JsonValue) -> JsonValue {
    let mut out = serde_json::Map::new();
    for key in ["type", "state_key", "sender", "content"] {
        if let Some(value) = event.get(key) {
            out.insert(key.to_owned(), value.clone());
        }
    }
    JsonValue::Object(out)
}
