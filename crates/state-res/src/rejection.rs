//! Why an event was rejected: one variant per auth rule that can fail, with
//! the values involved, so an admin can read what went wrong.

use std::fmt;

use crate::power_levels::Power;

impl fmt::Display for Power {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Power::Level(level) => write!(f, "{level}"),
            Power::Infinite => f.write_str("infinite (room creator)"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    // Rule 1: the create event.
    #[error("a create event must not have prev_events")]
    CreateHasPrevEvents,
    #[error("a create event's room id must be on its sender's server")]
    CreateRoomIdOnOtherServer,
    #[error("a v12 create event must not have a room_id")]
    CreateHasRoomId,
    #[error("the create event names an unknown room version {0:?}")]
    UnknownRoomVersion(String),
    #[error("the create event has no creator")]
    CreateWithoutCreator,
    #[error("additional_creators is not an array of valid user ids")]
    InvalidAdditionalCreators,

    // Rules 2 and 3: the auth events.
    #[error("the room id does not name an accepted create event")]
    RoomIdNotCreateEvent,
    #[error("two auth events for ({0}, {1:?})")]
    DuplicateAuthEvent(String, String),
    #[error("auth event ({0}, {1:?}) is not one this event may cite")]
    UnexpectedAuthEvent(String, String),
    #[error("auth event {0} was itself rejected")]
    RejectedAuthEvent(String),
    #[error("auth event {0} belongs to another room")]
    AuthEventFromOtherRoom(String),
    #[error("no m.room.create event among the auth events")]
    MissingCreateAuthEvent,

    // Rule 4.
    #[error("the room is not federated and the sender is on another server")]
    NotFederated,
    // v1–v5 aliases rule.
    #[error("an m.room.aliases state key must be the sender's server name")]
    AliasesStateKey,

    // Rule 5: membership.
    #[error("a member event needs a state_key and content.membership")]
    MemberWithoutMembership,
    #[error("{sender} cannot make {target} join: only users join themselves")]
    JoinForOther { sender: String, target: String },
    #[error("{0} is banned")]
    Banned(String),
    #[error("the join rule {0:?} does not let this user join")]
    JoinRuleForbids(String),
    #[error("join_authorised_via_users_server {0} is not a joined member allowed to invite")]
    InvalidAuthorisingUser(String),
    #[error("third-party invite: {0}")]
    ThirdPartyInvite(&'static str),
    #[error("{0} is not joined to the room")]
    SenderNotJoined(String),
    #[error("{target} cannot be invited: their membership is {membership}")]
    InviteTargetMembership { target: String, membership: String },
    #[error("{user} cannot leave from membership {membership:?}")]
    CannotLeave { user: String, membership: String },
    #[error("the target's power {target} is not below the sender's {sender}")]
    TargetNotLower { sender: Power, target: Power },
    #[error("the join rule {0:?} does not allow knocking")]
    KnockNotAllowed(String),
    #[error("users can only knock for themselves")]
    KnockForOther,
    #[error("cannot knock from membership {0:?}")]
    KnockFromMembership(String),
    #[error("unknown membership {0:?}")]
    UnknownMembership(String),

    // Rules 7 to 9.
    #[error("the sender's power {have} is below the {what} level {need}")]
    InsufficientPower {
        what: &'static str,
        have: Power,
        need: i64,
    },
    #[error("the state key {0} is another user's")]
    StateKeyOfOtherUser(String),

    // Rule 10: power levels.
    #[error("invalid power levels: {0}")]
    InvalidPowerLevels(String),
    #[error("power levels must not list the room creator {0} in users")]
    CreatorInPowerLevels(String),
    #[error("cannot change power level {field}: {reason}")]
    PowerLevelChange { field: String, reason: String },

    // v1–v2 redaction rule.
    #[error("redacting another server's event needs the redact level")]
    RedactionForbidden,
}
