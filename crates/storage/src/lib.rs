//! The storage engine: RocksDB column families seen as typed tables.
//!
//! This crate knows nothing of Matrix. A [`Table`] is a named column family
//! with a key codec and a value codec; the [`Database`] reads and scans
//! tables, and a [`Batch`] writes to several tables atomically. Every table
//! is described by a [`TableDef`] so tools can list tables and print their
//! rows as readable JSON without knowing the Rust types behind them.

mod codec;
mod database;
mod error;
mod table;

pub use codec::{Codec, DecodeError, Json, KeyPart, Raw, Str, U64};
pub use database::{Batch, Database, RawRow, Snapshot};
pub use error::{Error, Result};
pub use table::{KeyPrefix, Table, TableDef};
