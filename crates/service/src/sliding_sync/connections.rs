//! Sliding sync connections: per `(user, device, conn_id)`, what was sent
//! to the client at each `pos` it was given, so the next request gets only
//! what changed. Nothing of the request is remembered (clients send all of
//! it every time); only what the server sent.
//!
//! A request with `pos` P starts from the state stored at P and, once
//! answered, stores the new state under a new `pos`; every other position
//! of the connection is dropped then, so a retry with P (a lost answer)
//! still works and an older `pos` is unknown. Connections live in memory:
//! after a restart, or once idle for [`IDLE_EXPIRY`], a `pos` is unknown
//! and the client starts over (`M_UNKNOWN_POS`), as the MSC allows.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::required_state::RequiredState;
use crate::utils;

/// A connection unused this long is forgotten.
pub const IDLE_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Connections one device may keep (Element X uses two); the least
/// recently used goes first.
pub const PER_DEVICE: usize = 8;
/// Connections the server keeps in all.
pub const TOTAL: usize = 20_000;

/// What a connection's client was sent, as of one `pos`.
#[derive(Clone, Debug, Default)]
pub struct ConnState {
    /// The stream position the answer was computed at: changes at or
    /// after it are new to the client.
    pub stream: u64,
    /// Rooms sent on this connection, by room id.
    pub rooms: HashMap<String, RoomSent>,
    /// Per room: the stream position up to which the per-room extensions
    /// (receipts, account data) were sent.
    pub extension_rooms: HashMap<String, u64>,
}

/// What one room's last sending covered.
#[derive(Clone, Debug)]
pub struct RoomSent {
    /// The stream position up to which its timeline and state were sent.
    pub through: u64,
    pub timeline_limit: usize,
    pub required_state: Arc<RequiredState>,
    /// Members whose event went with `$LAZY` (not sent again).
    pub lazy_members: Arc<HashSet<String>>,
}

type Key = (String, String, String);

struct Connection {
    /// `(pos, state)`: the one the last request started from and the one it
    /// answered with.
    positions: Vec<(u64, Arc<ConnState>)>,
    last_used: Instant,
}

pub struct Connections {
    connections: Mutex<HashMap<Key, Connection>>,
    /// `pos` values: unique in this process, and starting at a random
    /// point so one from before a restart is unknown rather than another's.
    next_pos: AtomicU64,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            connections: Mutex::default(),
            next_pos: AtomicU64::new(u64::from(rand::random::<u32>()) << 20),
        }
    }
}

/// Why a `pos` cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownPos;

impl Connections {
    /// The state a request starts from: fresh without `pos` (a connection
    /// with that id starts over), the stored one for a known `pos`.
    pub fn start(
        &self,
        user: &str,
        device: &str,
        conn_id: &str,
        pos: Option<&str>,
    ) -> Result<Arc<ConnState>, UnknownPos> {
        let key = (user.to_owned(), device.to_owned(), conn_id.to_owned());
        let mut connections = utils::locked(&self.connections);
        let Some(pos) = pos else {
            connections.remove(&key);
            return Ok(Arc::default());
        };
        let pos: u64 = pos.parse().map_err(|_| UnknownPos)?;
        let connection = connections.get_mut(&key).ok_or(UnknownPos)?;
        if connection.last_used.elapsed() > IDLE_EXPIRY {
            connections.remove(&key);
            return Err(UnknownPos);
        }
        let state = connection
            .positions
            .iter()
            .find(|(p, _)| *p == pos)
            .map(|(_, state)| state.clone())
            .ok_or(UnknownPos)?;
        // Only this position may be used again now (a retry).
        connection.positions.retain(|(p, _)| *p == pos);
        connection.last_used = Instant::now();
        Ok(state)
    }

    /// Stores what an answer sent; returns its `pos`. `from` is the `pos`
    /// the request started from (kept for a retry).
    pub fn finish(
        &self,
        user: &str,
        device: &str,
        conn_id: &str,
        from: Option<&str>,
        state: ConnState,
    ) -> String {
        let pos = self.next_pos.fetch_add(1, Ordering::Relaxed);
        let key = (user.to_owned(), device.to_owned(), conn_id.to_owned());
        let mut connections = utils::locked(&self.connections);
        let from: Option<u64> = from.and_then(|p| p.parse().ok());
        let connection = connections
            .entry(key.clone())
            .or_insert_with(|| Connection {
                positions: Vec::new(),
                last_used: Instant::now(),
            });
        connection.positions.retain(|(p, _)| Some(*p) == from);
        connection.positions.push((pos, Arc::new(state)));
        connection.last_used = Instant::now();
        Self::bound(&mut connections, &key);
        pos.to_string()
    }

    /// Drops idle connections, then the least recently used ones of the
    /// device beyond [`PER_DEVICE`] and of the server beyond [`TOTAL`].
    fn bound(connections: &mut HashMap<Key, Connection>, kept: &Key) {
        let of_device = |k: &Key| k.0 == kept.0 && k.1 == kept.1;
        let device_count = connections.keys().filter(|k| of_device(k)).count();
        if device_count > PER_DEVICE {
            let oldest = connections
                .iter()
                .filter(|(k, _)| of_device(k) && *k != kept)
                .min_by_key(|(_, c)| c.last_used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                connections.remove(&oldest);
            }
        }
        if connections.len() > TOTAL {
            connections.retain(|_, c| c.last_used.elapsed() <= IDLE_EXPIRY);
            while connections.len() > TOTAL {
                let Some(oldest) = connections
                    .iter()
                    .filter(|(k, _)| *k != kept)
                    .min_by_key(|(_, c)| c.last_used)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                connections.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(stream: u64) -> ConnState {
        ConnState {
            stream,
            ..Default::default()
        }
    }

    #[test]
    fn positions_are_per_connection_and_only_the_last_used_one_stays() {
        let c = Connections::default();
        assert_eq!(
            c.start("@a:x", "D", "list", Some("12")).err(),
            Some(UnknownPos)
        );
        let fresh = c.start("@a:x", "D", "list", None).unwrap();
        assert_eq!(fresh.stream, 0);
        let p1 = c.finish("@a:x", "D", "list", None, state(10));
        // Another device, user or connection id does not know it.
        assert!(c.start("@a:x", "E", "list", Some(&p1)).is_err());
        assert!(c.start("@b:x", "D", "list", Some(&p1)).is_err());
        assert!(c.start("@a:x", "D", "other", Some(&p1)).is_err());
        assert!(c.start("@a:x", "D", "list", Some("not a number")).is_err());

        assert_eq!(c.start("@a:x", "D", "list", Some(&p1)).unwrap().stream, 10);
        let p2 = c.finish("@a:x", "D", "list", Some(&p1), state(20));
        // The answer with p2 was lost: p1 again works, and then p2 is gone.
        assert_eq!(c.start("@a:x", "D", "list", Some(&p1)).unwrap().stream, 10);
        assert!(c.start("@a:x", "D", "list", Some(&p2)).is_err());
        let p3 = c.finish("@a:x", "D", "list", Some(&p1), state(30));
        assert_eq!(c.start("@a:x", "D", "list", Some(&p3)).unwrap().stream, 30);
        // Now p1 is old.
        assert!(c.start("@a:x", "D", "list", Some(&p1)).is_err());

        // Two connections of one device live side by side.
        let e1 = c.finish("@a:x", "D", "encryption", None, state(40));
        assert!(c.start("@a:x", "D", "encryption", Some(&e1)).is_ok());
        assert!(c.start("@a:x", "D", "list", Some(&p3)).is_ok());

        // Starting without pos starts the connection over.
        c.start("@a:x", "D", "list", None).unwrap();
        assert!(c.start("@a:x", "D", "list", Some(&p3)).is_err());
    }

    #[test]
    fn a_device_keeps_a_bounded_number_of_connections() {
        let c = Connections::default();
        let mut positions = Vec::new();
        for i in 0..PER_DEVICE + 3 {
            let id = format!("conn{i}");
            positions.push((id.clone(), c.finish("@a:x", "D", &id, None, state(1))));
        }
        let known = positions
            .iter()
            .filter(|(id, pos)| c.start("@a:x", "D", id, Some(pos)).is_ok())
            .count();
        assert_eq!(known, PER_DEVICE);
        // The newest survive.
        let (id, pos) = positions.last().unwrap();
        assert!(c.start("@a:x", "D", id, Some(pos)).is_ok());
    }
}
