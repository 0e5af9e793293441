//! Room versions 1 to 12 as data: what differs between them, one field per
//! difference, so the rules read `if rules.knocking` instead of matching on
//! version strings.

/// How a room version derives event ids (and, from v12, the room id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventFormat {
    /// v1, v2: ids chosen by the origin server (`$opaque:server`).
    V1,
    /// v3: reference hash, standard unpadded base64.
    V3,
    /// v4 to v11: reference hash, URL-safe unpadded base64.
    V4,
    /// v12: as v4, and the room id is the create event's reference hash with `!`.
    V12,
}

/// Which state resolution algorithm the room uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateResAlgorithm {
    V1,
    V2,
    /// v2 with an empty start for the power events and the conflicted state subgraph (MSC4297).
    V2_1,
}

/// Which redaction algorithm keeps which keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RedactionRules {
    V1,
    /// v6: `m.room.aliases` loses its special content key.
    V6,
    /// v8: `join_rule`'s `allow` is kept.
    V8,
    /// v9: `join_authorised_via_users_server` is kept on member events.
    V9,
    /// v11: create keeps all content, PL keeps `invite`, redaction keeps `redacts`, etc.
    V11,
}

/// Everything the auth rules, state resolution and redaction need to know
/// about a room version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomVersion {
    pub id: &'static str,
    pub event_format: EventFormat,
    pub state_res: StateResAlgorithm,
    pub redaction: RedactionRules,
    /// v1–v5: `m.room.aliases` has its own auth rule (state key = sender's domain).
    pub special_case_aliases: bool,
    /// v1–v2: `m.room.redaction` needs the redact level or the same origin.
    pub redaction_auth_rule: bool,
    /// v6+: the `notifications` key of power levels is checked like `events`.
    pub notifications_power_levels: bool,
    /// v7+: `knock` membership and join rule.
    pub knocking: bool,
    /// v8+: `restricted` join rule and `join_authorised_via_users_server`.
    pub restricted_joins: bool,
    /// v10+: `knock_restricted` join rule.
    pub knock_restricted: bool,
    /// v10+: power level values must be JSON integers (earlier: strings too).
    pub integer_power_levels: bool,
    /// v1–v5: power level values may be floats (v6's canonical JSON has none).
    pub float_power_levels: bool,
    /// v1–v10: the create event must have `content.creator`, who is the creator;
    /// v11+: the create event's sender is.
    pub creator_in_content: bool,
    /// v12: the create sender and `additional_creators` have infinite power,
    /// and may not appear in the power levels' `users`.
    pub infinite_creator_power: bool,
    /// v12: the create event is not an auth event; the room id names it.
    pub room_id_is_create_event: bool,
}

const V1: RoomVersion = RoomVersion {
    id: "1",
    event_format: EventFormat::V1,
    state_res: StateResAlgorithm::V1,
    redaction: RedactionRules::V1,
    special_case_aliases: true,
    redaction_auth_rule: true,
    notifications_power_levels: false,
    knocking: false,
    restricted_joins: false,
    knock_restricted: false,
    integer_power_levels: false,
    float_power_levels: true,
    creator_in_content: true,
    infinite_creator_power: false,
    room_id_is_create_event: false,
};
const V2: RoomVersion = RoomVersion {
    id: "2",
    state_res: StateResAlgorithm::V2,
    ..V1
};
const V3: RoomVersion = RoomVersion {
    id: "3",
    event_format: EventFormat::V3,
    redaction_auth_rule: false,
    ..V2
};
const V4: RoomVersion = RoomVersion {
    id: "4",
    event_format: EventFormat::V4,
    ..V3
};
const V5: RoomVersion = RoomVersion { id: "5", ..V4 };
const V6: RoomVersion = RoomVersion {
    id: "6",
    redaction: RedactionRules::V6,
    special_case_aliases: false,
    notifications_power_levels: true,
    float_power_levels: false,
    ..V5
};
const V7: RoomVersion = RoomVersion {
    id: "7",
    knocking: true,
    ..V6
};
const V8: RoomVersion = RoomVersion {
    id: "8",
    redaction: RedactionRules::V8,
    restricted_joins: true,
    ..V7
};
const V9: RoomVersion = RoomVersion {
    id: "9",
    redaction: RedactionRules::V9,
    ..V8
};
const V10: RoomVersion = RoomVersion {
    id: "10",
    knock_restricted: true,
    integer_power_levels: true,
    ..V9
};
const V11: RoomVersion = RoomVersion {
    id: "11",
    redaction: RedactionRules::V11,
    creator_in_content: false,
    ..V10
};
const V12: RoomVersion = RoomVersion {
    id: "12",
    event_format: EventFormat::V12,
    state_res: StateResAlgorithm::V2_1,
    infinite_creator_power: true,
    room_id_is_create_event: true,
    ..V11
};

/// Every stable room version, oldest first.
pub const ALL: &[RoomVersion] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12];

impl RoomVersion {
    /// The rules of a room version by its id, e.g. `"11"`.
    pub fn from_id(id: &str) -> Option<&'static RoomVersion> {
        ALL.iter().find(|v| v.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_distinct_and_ordered() {
        for (i, v) in ALL.iter().enumerate() {
            assert_eq!(v.id, (i + 1).to_string());
        }
        assert!(RoomVersion::from_id("13").is_none());
        let v12 = RoomVersion::from_id("12").unwrap();
        assert_eq!(v12.state_res, StateResAlgorithm::V2_1);
        assert!(v12.knocking && v12.restricted_joins && !v12.special_case_aliases);
        assert_eq!(
            RoomVersion::from_id("1").unwrap().state_res,
            StateResAlgorithm::V1
        );
        assert!(RoomVersion::from_id("5").unwrap().special_case_aliases);
        assert!(!RoomVersion::from_id("6").unwrap().special_case_aliases);
    }
}
