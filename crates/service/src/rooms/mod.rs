//! Rooms: short ids, state snapshots, stored PDUs and the timeline, and
//! local event creation checked by the auth rules of `crates/state-res`.
//! The client endpoints over them come with the "Rooms, timeline and sync"
//! issue; for now these are reached from tests.

pub mod aliases;
pub mod create;
pub mod membership;
pub mod messages;
pub mod pdu;
pub mod redact;
pub mod send;
pub mod short;
pub mod state_snapshots;
pub mod timeline;

#[cfg(test)]
mod tests;
