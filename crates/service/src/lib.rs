//! The homeserver's logic. [`Services`] is the one handle to all of it: the
//! API layer gets it as axum state, tests build as many as they like.

pub mod account_data;
pub mod config;
mod error;
pub mod filters;
pub mod registration;
pub mod session;
pub mod tables;
pub mod uiaa;
pub mod users;
pub mod utils;

use std::sync::Arc;

use conduit_storage::Database;

use self::{
    account_data::AccountData, filters::Filters, uiaa::Uiaa, users::Users, users::devices::Devices,
};
pub use self::{
    config::Config,
    error::{Error, ErrorCode, Result},
};

pub struct Services {
    pub config: Config,
    pub db: Arc<Database>,
    pub users: Users,
    pub devices: Devices,
    pub uiaa: Uiaa,
    pub account_data: AccountData,
    pub filters: Filters,
}

impl Services {
    /// Opens the database named by the config and builds every service.
    pub fn open(config: Config) -> Result<Arc<Self>, conduit_storage::Error> {
        let cache_bytes = (config.db_cache_capacity_mb * 1024.0 * 1024.0) as usize;
        let db = Arc::new(Database::open(
            &config.database_path,
            tables::ALL,
            cache_bytes,
        )?);
        Ok(Arc::new(Self {
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
