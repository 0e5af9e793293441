//! The homeserver's logic. [`Services`] is the one handle to all of it: the
//! API layer gets it as axum state, tests build as many as they like.

mod account;
pub mod account_data;
pub mod config;
mod counter;
mod error;
pub mod filters;
pub mod registration;
pub mod rooms;
pub mod server_keys;
pub mod session;
pub mod sync;
pub mod tables;
pub mod uiaa;
pub mod users;
pub mod utils;

use std::sync::Arc;

use conduit_storage::Database;

use self::{
    account_data::AccountData,
    filters::Filters,
    rooms::{short::ShortIds, state_snapshots::StateSnapshots, timeline::Rooms},
    server_keys::ServerKeys,
    uiaa::Uiaa,
    users::devices::Devices,
    users::{Users, locks::UserLocks},
};
pub use self::{
    config::Config,
    error::{Error, ErrorCode, Result},
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Database(#[from] conduit_storage::Error),
    #[error("cannot load the server signing key: {0}")]
    SigningKey(String),
    #[error("cannot read the database: {0}")]
    Load(String),
}

pub struct Services {
    pub config: Config,
    pub db: Arc<Database>,
    pub users: Users,
    pub devices: Devices,
    pub uiaa: Uiaa,
    pub account_data: AccountData,
    pub filters: Filters,
    pub server_keys: ServerKeys,
    pub short_ids: ShortIds,
    pub user_locks: UserLocks,
    pub state_snapshots: StateSnapshots,
    pub rooms: Rooms,
}

impl Services {
    /// Opens the database named by the config and builds every service.
    pub fn open(config: Config) -> Result<Arc<Self>, StartError> {
        let cache_bytes = (config.db_cache_capacity_mb * 1024.0 * 1024.0) as usize;
        let db = Arc::new(Database::open(
            &config.database_path,
            tables::ALL,
            cache_bytes,
        )?);
        let server_keys = ServerKeys::load_or_create(&db, &config.server_name)
            .map_err(|e| StartError::SigningKey(e.to_string()))?;
        let short_ids = ShortIds::new(db.clone()).map_err(|e| StartError::Load(e.to_string()))?;
        let rooms = Rooms::new(db.clone()).map_err(|e| StartError::Load(e.to_string()))?;
        Ok(Arc::new(Self {
            server_keys,
            short_ids,
            user_locks: UserLocks::new(256),
            state_snapshots: StateSnapshots::new(db.clone(), config.state_cache_entries),
            rooms,
            users: Users::new(db.clone(), &config.server_name),
            devices: Devices::new(db.clone(), config.refreshable_access_token_lifetime * 1000),
            uiaa: Uiaa::default(),
            account_data: AccountData::new(db.clone()),
            filters: Filters::new(db.clone()),
            db,
            config,
        }))
    }
}
