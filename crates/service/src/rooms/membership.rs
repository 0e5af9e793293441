//! Membership changes of local users (join, leave, invite, kick, ban,
//! unban, knock), each a member event through the auth rules, and who is
//! in a room.

use ruma::UserId;
use serde_json::{Value as JsonValue, json};

use super::{pdu::Pdu, send::NewEvent};
use crate::{Error, ErrorCode, Result, Services};

/// What a membership request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Join,
    Leave,
    Invite,
    Kick,
    Ban,
    Unban,
    /// Asking to be let in (room versions 7 and later, `knock` join rule).
    Knock,
}

impl Services {
    /// Adds the user's display name and avatar to a member event's content.
    pub(crate) fn add_profile(&self, content: &mut JsonValue, user: &UserId) -> Result<()> {
        for field in ["displayname", "avatar_url"] {
            if let Some(value) = self.users.profile_field(user, field)? {
                content[field] = value;
            }
        }
        Ok(())
    }

    /// Changes `target`'s membership as `sender` asks; the auth rules decide.
    pub async fn change_membership(
        &self,
        room_id: &str,
        sender: &UserId,
        target: &UserId,
        change: Change,
        reason: Option<&str>,
    ) -> Result<Pdu> {
        if self.rooms.room(room_id)?.is_none() {
            return Err(Error::not_found("This server is not in the room."));
        }
        let remote_target = target.server_name() != self.config.server_name;
        match change {
            Change::Join | Change::Knock | Change::Leave if remote_target && sender == target => {
                return Err(Error::forbidden(
                    "Users of other servers change their own membership through their server.",
                ));
            }
            _ => {}
        }
        let current = self.rooms.membership(target.as_str(), room_id)?;
        // The spec's endpoint rules on top of the auth rules, which would
        // otherwise read a kick of a stranger or an unban of a member as leaves.
        match change {
            Change::Kick if !matches!(current.as_str(), "join" | "invite" | "knock") => {
                return Err(Error::forbidden("The user is not in the room."));
            }
            Change::Unban if current != "ban" => {
                return Err(Error::forbidden("The user is not banned."));
            }
            _ => {}
        }
        let membership = match change {
            Change::Join => "join",
            Change::Leave | Change::Kick | Change::Unban => "leave",
            Change::Invite => "invite",
            Change::Ban => "ban",
            Change::Knock => "knock",
        };
        let mut content = json!({ "membership": membership });
        if let Some(reason) = reason {
            content["reason"] = reason.into();
        }
        // Clients show names from member events: joins (and knocks, which
        // moderators look at) carry the profile.
        if matches!(change, Change::Join | Change::Knock) {
            self.add_profile(&mut content, target)?;
        }
        if change == Change::Invite && remote_target {
            // The invitee's server countersigns the invite first.
            return self
                .invite_remote_user(room_id, sender, target, content)
                .await;
        }
        self.send_local_event(
            room_id,
            sender,
            NewEvent {
                kind: "m.room.member",
                state_key: Some(target.as_str()),
                content,
            },
        )
        .await
    }

    /// Forgets a room the user is no longer in: it leaves their room list.
    pub fn forget_room(&self, user_id: &UserId, room_id: &str) -> Result<()> {
        if matches!(
            self.rooms.membership(user_id.as_str(), room_id)?.as_str(),
            "join" | "invite" | "knock"
        ) {
            return Err(
                Error::new(ErrorCode::Unknown, "Leave the room before forgetting it.")
                    .with_status(400),
            );
        }
        self.rooms.forget(user_id.as_str(), room_id)
    }

    /// The current member events of a room.
    pub fn members(&self, room_id: &str) -> Result<Vec<Pdu>> {
        self.members_at(room_id, None)
    }

    /// The users joined to a room now.
    pub fn joined_member_ids(&self, room_id: &str) -> Result<Vec<String>> {
        Ok(self
            .members(room_id)?
            .iter()
            .filter(|pdu| membership_of(pdu) == "join")
            .filter_map(|pdu| pdu.state_key.clone())
            .collect())
    }

    /// The member events of a room at a stream position (a sync token),
    /// or now.
    pub fn members_at(&self, room_id: &str, at: Option<u64>) -> Result<Vec<Pdu>> {
        let state = match at {
            Some(position) => {
                let room = self
                    .rooms
                    .room(room_id)?
                    .ok_or_else(|| Error::not_found("Unknown room."))?;
                self.state_at(&room, position)?
            }
            None => self.current_state_of(room_id)?,
        };
        let mut members = Vec::new();
        for (&key, &event) in state.iter() {
            if self.short_ids.state_key(key)?.0 == "m.room.member"
                && let Some(pdu) = self.rooms.pdu(event, &self.short_ids)?
            {
                members.push(pdu);
            }
        }
        Ok(members)
    }
}

/// `content.membership` of a member event.
pub fn membership_of(pdu: &Pdu) -> &str {
    pdu.content
        .get("membership")
        .and_then(JsonValue::as_str)
        .unwrap_or("leave")
}
