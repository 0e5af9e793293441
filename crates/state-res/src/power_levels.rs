//! `m.room.power_levels` content, read the way each room version allows,
//! and the power of users derived from it and from the create event.

use std::collections::BTreeMap;

use serde_json::Value as JsonValue;

use crate::{
    event::{Event, is_valid_user_id, types},
    room_version::RoomVersion,
};

/// A user's power. Room creators in v12 have infinite power, above any level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Power {
    Level(i64),
    Infinite,
}

/// The power levels in force, with the spec's defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PowerLevels {
    pub users: BTreeMap<String, i64>,
    pub users_default: i64,
    pub events: BTreeMap<String, i64>,
    pub events_default: i64,
    pub state_default: i64,
    pub ban: i64,
    pub kick: i64,
    pub invite: i64,
    pub redact: i64,
    pub notifications: BTreeMap<String, i64>,
}

/// The top-level integer fields, with their defaults when a power levels
/// event exists but leaves them out.
const LEVEL_FIELDS: [(&str, i64); 7] = [
    ("users_default", 0),
    ("events_default", 0),
    ("state_default", 50),
    ("ban", 50),
    ("kick", 50),
    ("invite", 0),
    ("redact", 50),
];

/// Why a power levels content is invalid for its room version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidPowerLevels(pub String);

/// Reads one power level value as the room version allows: integers always;
/// before v10 also strings holding an integer; in v1–v5 also floats
/// (truncated; v6's canonical JSON has no floats).
pub fn parse_level(value: &JsonValue, version: &RoomVersion) -> Option<i64> {
    if let Some(n) = value.as_i64() {
        return Some(n);
    }
    if version.integer_power_levels {
        return None;
    }
    match value {
        JsonValue::String(s) => s.trim().parse::<i64>().ok(),
        JsonValue::Number(n) if version.float_power_levels => n
            .as_f64()
            .filter(|f| f.is_finite() && f.abs() < 9.2e18)
            .map(|f| f.trunc() as i64),
        _ => None,
    }
}

/// Reads one of the maps (`users`, `events`, `notifications`). Strictly,
/// any bad entry is an error; leniently, bad entries are skipped and the
/// good ones kept.
fn parse_map(
    content: &JsonValue,
    key: &str,
    version: &RoomVersion,
    keys_are_users: bool,
    strict: bool,
) -> Result<BTreeMap<String, i64>, InvalidPowerLevels> {
    let Some(value) = content.get(key) else {
        return Ok(BTreeMap::new());
    };
    let Some(object) = value.as_object() else {
        return if strict {
            Err(InvalidPowerLevels(format!("`{key}` is not an object")))
        } else {
            Ok(BTreeMap::new())
        };
    };
    let mut map = BTreeMap::new();
    for (name, level) in object {
        let parsed = parse_level(level, version);
        match parsed {
            Some(level) if !keys_are_users || is_valid_user_id(name) => {
                map.insert(name.clone(), level);
            }
            _ if !strict => {}
            Some(_) => {
                return Err(InvalidPowerLevels(format!(
                    "`{key}` has an invalid user id {name:?}"
                )));
            }
            None => {
                return Err(InvalidPowerLevels(format!(
                    "`{key}.{name}` is not an integer"
                )));
            }
        }
    }
    Ok(map)
}

impl PowerLevels {
    /// The power levels of a room with no `m.room.power_levels` event: the
    /// same defaults as an empty one (the spec's `m.room.power_levels`
    /// schema; `state_default` is 50 here too, as Synapse and ruma have it).
    pub fn without_event() -> Self {
        Self {
            users: BTreeMap::new(),
            users_default: 0,
            events: BTreeMap::new(),
            events_default: 0,
            state_default: 50,
            ban: 50,
            kick: 50,
            invite: 0,
            redact: 50,
            notifications: BTreeMap::new(),
        }
    }

    /// Parses content strictly, as the auth rule for a new power levels
    /// event reads it: every present value must be a level the room version
    /// accepts (strings and floats before v10), and `users` keys user ids.
    /// Synapse rejects such junk in every version too.
    pub fn parse(content: &JsonValue, version: &RoomVersion) -> Result<Self, InvalidPowerLevels> {
        Self::parse_with(content, version, true)
    }

    fn parse_with(
        content: &JsonValue,
        version: &RoomVersion,
        strict: bool,
    ) -> Result<Self, InvalidPowerLevels> {
        let mut levels = [0i64; 7];
        for (slot, (field, default)) in levels.iter_mut().zip(LEVEL_FIELDS) {
            *slot = match content.get(field).map(|value| parse_level(value, version)) {
                None => default,
                Some(Some(level)) => level,
                Some(None) if strict => {
                    return Err(InvalidPowerLevels(format!("`{field}` is not an integer")));
                }
                Some(None) => default,
            };
        }
        let [
            users_default,
            events_default,
            state_default,
            ban,
            kick,
            invite,
            redact,
        ] = levels;
        Ok(Self {
            users: parse_map(content, "users", version, true, strict)?,
            users_default,
            events: parse_map(content, "events", version, false, strict)?,
            events_default,
            state_default,
            ban,
            kick,
            invite,
            redact,
            notifications: parse_map(content, "notifications", version, false, strict)?,
        })
    }

    /// Reads the power levels in force from an accepted event. An event
    /// accepted under older rules may hold values today's checks refuse:
    /// those fall back to defaults, entry by entry, and the rest count.
    pub fn from_event<E: Event>(event: Option<&E>, version: &RoomVersion) -> Self {
        match event {
            Some(event) => Self::parse_with(event.content(), version, false)
                .expect("lenient parsing never fails"),
            None => Self::without_event(),
        }
    }

    /// The level needed to send an event of this type (auth rule "required power level").
    pub fn required_for(&self, event_type: &str, is_state: bool) -> i64 {
        self.events.get(event_type).copied().unwrap_or(if is_state {
            self.state_default
        } else {
            self.events_default
        })
    }
}

/// Who created the room, read from the create event.
#[derive(Clone, Debug, Default)]
pub struct Creators {
    /// v1–v10: `content.creator`; v11+: the create event's sender.
    pub creator: Option<String>,
    /// v12: the sender and `additional_creators`, all with infinite power.
    pub all: Vec<String>,
}

impl Creators {
    pub fn from_create<E: Event>(create: Option<&E>, version: &RoomVersion) -> Self {
        let Some(create) = create else {
            return Self::default();
        };
        let creator = if version.creator_in_content {
            create.content_str("creator").map(str::to_owned)
        } else {
            Some(create.sender().to_owned())
        };
        let mut all = Vec::new();
        if version.infinite_creator_power {
            all.push(create.sender().to_owned());
            if let Some(JsonValue::Array(extra)) = create.content().get("additional_creators") {
                all.extend(
                    extra
                        .iter()
                        .filter_map(JsonValue::as_str)
                        .map(str::to_owned),
                );
            }
        }
        Self { creator, all }
    }

    pub fn contains(&self, user: &str) -> bool {
        self.all.iter().any(|c| c == user)
    }
}

/// A user's power: infinite for v12 creators, else from the power levels
/// event, else 100 for the creator of a room without one and 0 for others.
pub fn user_power(
    user: &str,
    levels_event_exists: bool,
    levels: &PowerLevels,
    creators: &Creators,
) -> Power {
    if creators.contains(user) {
        return Power::Infinite;
    }
    if levels_event_exists {
        return Power::Level(
            levels
                .users
                .get(user)
                .copied()
                .unwrap_or(levels.users_default),
        );
    }
    if creators.creator.as_deref() == Some(user) {
        Power::Level(100)
    } else {
        Power::Level(0)
    }
}

/// The power levels and creators of a room state, read once and asked many times.
pub struct RoomPower {
    pub levels: PowerLevels,
    pub has_levels_event: bool,
    pub creators: Creators,
}

impl RoomPower {
    pub fn new<E: Event>(
        create: Option<&E>,
        power_levels: Option<&E>,
        version: &RoomVersion,
    ) -> Self {
        debug_assert!(power_levels.is_none_or(|e| e.is_type(types::POWER_LEVELS)));
        Self {
            levels: PowerLevels::from_event(power_levels, version),
            has_levels_event: power_levels.is_some(),
            creators: Creators::from_create(create, version),
        }
    }

    pub fn of(&self, user: &str) -> Power {
        user_power(user, self.has_levels_event, &self.levels, &self.creators)
    }

    /// Whether `user` has the level to send an event of this type.
    pub fn may_send(&self, user: &str, event_type: &str, is_state: bool) -> bool {
        self.of(user) >= Power::Level(self.levels.required_for(event_type, is_state))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn version(id: &str) -> &'static RoomVersion {
        RoomVersion::from_id(id).unwrap()
    }

    #[test]
    fn stringy_and_floaty_levels_only_before_v10() {
        assert_eq!(parse_level(&json!("50"), version("9")), Some(50));
        assert_eq!(parse_level(&json!(50.7), version("5")), Some(50));
        assert_eq!(parse_level(&json!(50.7), version("6")), None);
        assert_eq!(parse_level(&json!("50"), version("10")), None);
        assert_eq!(parse_level(&json!(50.7), version("10")), None);
        assert_eq!(parse_level(&json!(-3), version("10")), Some(-3));
        assert_eq!(parse_level(&json!("abc"), version("1")), None);
    }

    #[test]
    fn defaults_with_and_without_event() {
        let empty = PowerLevels::parse(&json!({}), version("11")).unwrap();
        assert_eq!((empty.state_default, empty.ban, empty.invite), (50, 50, 0));
        assert_eq!(PowerLevels::without_event(), empty);
        assert_eq!(empty.required_for("m.room.name", true), 50);
        assert_eq!(empty.required_for("m.room.message", false), 0);
    }

    #[test]
    fn strict_parse_rejects_bad_users_everywhere_and_bad_levels_from_v10() {
        assert!(PowerLevels::parse(&json!({"users": {"not-a-user": 1}}), version("1")).is_err());
        assert!(PowerLevels::parse(&json!({"users": {"@a:x": "1"}}), version("10")).is_err());
        assert!(PowerLevels::parse(&json!({"ban": "50"}), version("10")).is_err());
        assert!(PowerLevels::parse(&json!({"events": {"m.x": "5"}}), version("10")).is_err());
        assert_eq!(
            PowerLevels::parse(&json!({"ban": "5"}), version("9"))
                .unwrap()
                .ban,
            5
        );
    }
}
