//! Rooms, the foundation laid so far: short ids for event ids and state
//! keys, and room states stored as layered diffs. Events, the timeline and
//! the client endpoints build on these (issue "Rooms, timeline and sync").

pub mod short;
pub mod state_snapshots;
