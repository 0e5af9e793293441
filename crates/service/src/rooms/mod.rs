//! Rooms: short ids, state snapshots, stored PDUs and the timeline, and
//! local event creation checked by the auth rules of `crates/state-res`.
//! Ephemeral data (typing, receipts) and unread counts live here too.

pub mod aliases;
pub mod create;
pub mod directory;
pub mod hierarchy;
pub mod members;
pub mod membership;
pub mod messages;
pub mod pdu;
pub mod push;
pub mod receipts;
pub mod redact;
pub mod relations;
pub mod resolution;
pub mod search;
pub mod send;
pub mod short;
pub mod state;
pub mod state_snapshots;
pub mod timeline;
pub mod timestamp;
pub mod typing;
pub mod visibility;

#[cfg(test)]
mod tests;
