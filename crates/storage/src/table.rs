use std::marker::PhantomData;

use serde_json::Value;

use crate::codec::{Codec, KeyPart, encode_part};

/// A named column family with typed keys and values.
///
/// Tables are plain constants (`const USERS: Table<Str, Json<User>> = Table::new("users");`):
/// declaring one costs nothing, and the database checks at open time that it
/// knows every table it is asked for.
pub struct Table<K, V> {
    name: &'static str,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K: Codec, V: Codec> Table<K, V> {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            types: PhantomData,
        }
    }

    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The description of this table used to open the database and to print rows.
    pub const fn def(&self) -> TableDef {
        TableDef {
            name: self.name,
            render_key: K::render,
            render_value: V::render,
        }
    }

    pub(crate) fn encode_key(key: K::In<'_>) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(64);
        K::encode(key, &mut bytes);
        bytes
    }
}

/// What the database needs to know of a table without its Rust types: its
/// name, and how to show its keys and values to a person.
#[derive(Clone, Copy)]
pub struct TableDef {
    pub name: &'static str,
    pub render_key: fn(&[u8]) -> Value,
    pub render_value: fn(&[u8]) -> Value,
}

/// The leading parts of a composite key, for prefix scans: every key that
/// starts with these parts, e.g. all devices of one user.
#[derive(Clone, Default)]
pub struct KeyPrefix(Vec<u8>);

impl KeyPrefix {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one key part, with the separator a composite key puts after it.
    pub fn push<A: KeyPart>(mut self, part: A::In<'_>) -> Self {
        encode_part::<A>(part, &mut self.0);
        self
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}
