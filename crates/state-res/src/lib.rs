//! The state-resolution core: the spec's authorisation rules and state
//! resolution (v1, v2, v2.1) for room versions 1 to 12.
//!
//! Pure: no I/O, no async, no database. The caller describes events through
//! the [`Event`] trait over its own short integer ids, and gets back
//! decisions ([`Rejection`] says why an event is refused) and resolved
//! state maps.

pub mod auth;
pub mod event;
mod id_hash;
pub mod power_levels;
pub mod redaction;
mod rejection;
pub mod resolve;
mod resolve_v1;
pub mod room_version;

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod resolve_tests;
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod test_room;

pub use self::{
    auth::{AuthState, auth_types_for_event, check_against_state, check_auth_events},
    event::{Event, ShortEventId},
    id_hash::{IdMap, IdSet},
    power_levels::{Power, PowerLevels},
    redaction::redact,
    rejection::Rejection,
    resolve::{EventSource, ShortStateKey, StateMap, resolve},
    room_version::RoomVersion,
};
