use std::path::PathBuf;

use crate::DecodeError;

/// Everything that can go wrong below the homeserver's logic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process (or this one) already has the database open.
    #[error(
        "the database at {0} is already in use (is another conduit running with the same database_path?)"
    )]
    Locked(PathBuf),
    /// A row could not be decoded: the database holds data this code does not understand.
    #[error("corrupt row in table {table}: {source}")]
    Decode {
        table: &'static str,
        source: DecodeError,
    },
    /// The code asked for a table the database was not opened with.
    #[error("unknown table {0}")]
    UnknownTable(String),
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
