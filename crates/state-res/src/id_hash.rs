//! Hash sets and maps over short integer ids, with a multiplicative hash
//! instead of SipHash: ids are ours, not attacker-chosen strings, and dense
//! ids need their high bits mixed for hashbrown's control bytes.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
};

#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = (self.0 ^ id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub type IdSet = HashSet<u64, BuildHasherDefault<IdHasher>>;
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;
