//! Membership: join, leave, invite, kick, ban, unban, knock, forget, and who is in
//! a room. Rooms of other servers need federation (not yet): 404 / 403.

use std::{collections::BTreeMap, sync::Arc};

use axum::extract::State;
use conduit_service::{
    Error, Services,
    rooms::membership::{Change, membership_of},
};
use ruma::{
    OwnedMxcUri, OwnedRoomId, OwnedServerName, OwnedUserId, RoomOrAliasId,
    api::client::{
        knock::knock_room,
        membership::{
            ban_user, forget_room, get_member_events, invite_user, join_room_by_id,
            join_room_by_id_or_alias, joined_members, kick_user, leave_room, unban_user,
        },
    },
};

use super::room::require_joined;
use crate::{Ruma, RumaResponse, error::ApiError};

fn room_id(id: &str) -> Result<OwnedRoomId, ApiError> {
    OwnedRoomId::try_from(id).map_err(|e| Error::internal(e).into())
}

pub async fn join_by_id(
    State(services): State<Arc<Services>>,
    req: Ruma<join_room_by_id::v3::Request, true>,
) -> Result<RumaResponse<join_room_by_id::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let room = req.body.room_id.as_str();
    services
        .join_room(room, &sender.user_id, &[], req.body.reason.as_deref())
        .await?;
    Ok(RumaResponse(join_room_by_id::v3::Response::new(room_id(
        room,
    )?)))
}

/// `POST /join/{roomIdOrAlias}`: an alias of another server is asked of
/// that server, which also names servers to join through; `via` adds more.
pub async fn join_by_id_or_alias(
    State(services): State<Arc<Services>>,
    req: Ruma<join_room_by_id_or_alias::v3::Request, true>,
) -> Result<RumaResponse<join_room_by_id_or_alias::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let (room, via) = resolve(&services, &req.body.room_id_or_alias, &req.body.via).await?;
    services
        .join_room(&room, &sender.user_id, &via, req.body.reason.as_deref())
        .await?;
    Ok(RumaResponse(join_room_by_id_or_alias::v3::Response::new(
        room_id(&room)?,
    )))
}

/// A room id, or the room an alias names (asked of the alias's server
/// when it is not ours), with the servers to reach it through: `via` and
/// those the alias's server named.
async fn resolve(
    services: &Services,
    target: &RoomOrAliasId,
    via: &[OwnedServerName],
) -> Result<(String, Vec<OwnedServerName>), ApiError> {
    let mut via = via.to_vec();
    if target.is_room_alias_id() {
        let (room, servers) = services.resolve_room_alias(target.as_str()).await?;
        via.extend(servers);
        Ok((room, via))
    } else {
        Ok((target.as_str().to_owned(), via))
    }
}

/// `POST /knock/{roomIdOrAlias}`: the auth rules allow it only in rooms
/// whose version and join rule do.
pub async fn knock(
    State(services): State<Arc<Services>>,
    req: Ruma<knock_room::v3::Request>,
) -> Result<RumaResponse<knock_room::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let (room, via) = resolve(&services, &req.body.room_id_or_alias, &req.body.via).await?;
    services
        .knock_room(&room, &sender.user_id, &via, req.body.reason.as_deref())
        .await?;
    Ok(RumaResponse(knock_room::v3::Response::new(room_id(&room)?)))
}

pub async fn leave(
    State(services): State<Arc<Services>>,
    req: Ruma<leave_room::v3::Request, true>,
) -> Result<RumaResponse<leave_room::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let room = req.body.room_id.as_str();
    // An invite from another server to a room this server is not in is
    // rejected through the inviting server.
    if services.rooms.room(room)?.is_none()
        && services.remote_invite(&sender.user_id, room)?.is_some()
    {
        services.reject_remote_invite(&sender.user_id, room).await?;
        return Ok(RumaResponse(leave_room::v3::Response::new()));
    }
    services
        .change_membership(
            room,
            &sender.user_id,
            &sender.user_id,
            Change::Leave,
            req.body.reason.as_deref(),
        )
        .await?;
    Ok(RumaResponse(leave_room::v3::Response::new()))
}

pub async fn invite(
    State(services): State<Arc<Services>>,
    req: Ruma<invite_user::v3::Request>,
) -> Result<RumaResponse<invite_user::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let invite_user::v3::InvitationRecipient::UserId(recipient) = &req.body.recipient else {
        return Err(
            Error::invalid_param("Third-party invites are not supported by this server.").into(),
        );
    };
    // A bridge's puppet may come into being on being invited.
    services
        .local_user_asking_appservices(&recipient.user_id)
        .await?;
    services
        .change_membership(
            req.body.room_id.as_str(),
            &sender.user_id,
            &recipient.user_id,
            Change::Invite,
            recipient.reason.as_deref(),
        )
        .await?;
    Ok(RumaResponse(invite_user::v3::Response::new()))
}

pub async fn kick(
    State(services): State<Arc<Services>>,
    req: Ruma<kick_user::v3::Request>,
) -> Result<RumaResponse<kick_user::v3::Response>, ApiError> {
    let b = &req.body;
    services
        .change_membership(
            b.room_id.as_str(),
            &req.sender()?.user_id,
            &b.user_id,
            Change::Kick,
            b.reason.as_deref(),
        )
        .await?;
    Ok(RumaResponse(kick_user::v3::Response::new()))
}

pub async fn ban(
    State(services): State<Arc<Services>>,
    req: Ruma<ban_user::v3::Request>,
) -> Result<RumaResponse<ban_user::v3::Response>, ApiError> {
    let b = &req.body;
    services
        .change_membership(
            b.room_id.as_str(),
            &req.sender()?.user_id,
            &b.user_id,
            Change::Ban,
            b.reason.as_deref(),
        )
        .await?;
    Ok(RumaResponse(ban_user::v3::Response::new()))
}

pub async fn unban(
    State(services): State<Arc<Services>>,
    req: Ruma<unban_user::v3::Request>,
) -> Result<RumaResponse<unban_user::v3::Response>, ApiError> {
    let b = &req.body;
    services
        .change_membership(
            b.room_id.as_str(),
            &req.sender()?.user_id,
            &b.user_id,
            Change::Unban,
            b.reason.as_deref(),
        )
        .await?;
    Ok(RumaResponse(unban_user::v3::Response::new()))
}

pub async fn forget(
    State(services): State<Arc<Services>>,
    req: Ruma<forget_room::v3::Request>,
) -> Result<RumaResponse<forget_room::v3::Response>, ApiError> {
    services.forget_room(&req.sender()?.user_id, req.body.room_id.as_str())?;
    Ok(RumaResponse(forget_room::v3::Response::new()))
}

pub async fn joined_members(
    State(services): State<Arc<Services>>,
    req: Ruma<joined_members::v3::Request>,
) -> Result<RumaResponse<joined_members::v3::Response>, ApiError> {
    let room = req.body.room_id.as_str();
    require_joined(&services, req.sender()?.user_id.as_str(), room)?;
    let mut joined = BTreeMap::new();
    for pdu in services.members(room)? {
        let Some(user) = pdu
            .state_key
            .as_deref()
            .and_then(|u| OwnedUserId::try_from(u).ok())
        else {
            continue;
        };
        if membership_of(&pdu) == "join" {
            let mut member = joined_members::v3::RoomMember::new();
            member.display_name = pdu
                .content
                .get("displayname")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            member.avatar_url = pdu
                .content
                .get("avatar_url")
                .and_then(|v| v.as_str())
                .map(OwnedMxcUri::from);
            joined.insert(user, member);
        }
    }
    Ok(RumaResponse(joined_members::v3::Response::new(joined)))
}

/// `GET /members`: the member events now, or at a sync token (`at`),
/// filtered by membership.
pub async fn members(
    State(services): State<Arc<Services>>,
    req: Ruma<get_member_events::v3::Request, true>,
) -> Result<RumaResponse<get_member_events::v3::Response>, ApiError> {
    let room = req.body.room_id.as_str();
    require_joined(&services, req.sender()?.user_id.as_str(), room)?;
    let wanted = req.body.membership.as_ref().map(|m| m.as_str().to_owned());
    let unwanted = req
        .body
        .not_membership
        .as_ref()
        .map(|m| m.as_str().to_owned());
    let mut chunk = Vec::new();
    let at = super::messages::token(req.body.at.as_deref())?;
    for pdu in services.members_at(room, at)? {
        let membership = membership_of(&pdu);
        if wanted.as_deref().is_some_and(|w| w != membership)
            || unwanted.as_deref() == Some(membership)
        {
            continue;
        }
        chunk.push(super::room::client_event(&pdu)?);
    }
    Ok(RumaResponse(get_member_events::v3::Response::new(chunk)))
}
