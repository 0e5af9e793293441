//! The homeserver's logic. [`Services`] is the one handle to all of it: the
//! API layer gets it as axum state, tests build as many as they like.

mod account;
pub mod account_data;
pub mod account_page;
pub mod admin_commands;
pub mod admin_room;
pub mod appservice;
pub mod config;
mod counter;
pub mod e2ee;
mod error;
pub mod federation;
pub mod filters;
pub mod invites;
pub mod media;
pub mod metrics;
pub mod oauth;
pub mod openid;
pub mod outbound;
pub mod presence;
pub mod push;
pub mod rate_limit;
pub mod registration;
pub mod registration_tokens;
pub mod rooms;
pub mod server_keys;
pub mod session;
pub mod sliding_sync;
pub mod sso;
pub mod stream;
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
    presence::Presence,
    registration_tokens::RegistrationTokens,
    rooms::{
        members::MemberSummaries, push::PushCache, resolution::AuthEventsCache, short::ShortIds,
        state_snapshots::StateSnapshots, timeline::Rooms, typing::Typing,
    },
    server_keys::ServerKeys,
    sso::Sso,
    stream::Stream,
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
    #[error("{0}")]
    Http(String),
    /// A registration file that does not parse or clashes with another.
    #[error("{0}")]
    Appservice(String),
}

pub struct Services {
    pub config: Config,
    pub db: Arc<Database>,
    pub users: Users,
    pub devices: Devices,
    pub uiaa: Uiaa,
    pub registration_tokens: RegistrationTokens,
    /// Registration-token validity checks per client address.
    pub token_validity_limiter: rate_limit::RateLimiter,
    /// Single sign-on starts per client address.
    pub sso_start_limiter: rate_limit::RateLimiter,
    pub account_data: AccountData,
    pub filters: Filters,
    pub server_keys: ServerKeys,
    pub short_ids: ShortIds,
    pub user_locks: UserLocks,
    pub state_snapshots: StateSnapshots,
    pub rooms: Rooms,
    pub stream: Arc<Stream>,
    pub typing: Typing,
    pub push_cache: PushCache,
    /// Pushers and the workers pushing to their gateways.
    pub pushers: push::Pushers,
    /// Registered application services and their transaction workers.
    pub appservices: appservice::Appservices,
    pub member_summaries: MemberSummaries,
    pub auth_events_cache: AuthEventsCache,
    pub presence: Presence,
    pub sliding_sync_connections: sliding_sync::Connections,
    /// OAuth 2.0 authorizations and codes in progress.
    pub oauth: oauth::OAuth,
    /// Browsers signed in on the account management page.
    pub account_sessions: account_page::AccountSessions,
    pub sso: Sso,
    pub federation: federation::Federation,
    pub metrics: metrics::Metrics,
    /// Set when the server begins to stop: the health check fails from then on.
    pub shutting_down: std::sync::atomic::AtomicBool,
    /// Held while one-time keys are claimed: each goes to one claimer.
    pub(crate) key_claims: std::sync::Mutex<()>,
    pub(crate) to_device_pending: e2ee::to_device::PendingCounts,
    pub(crate) media_store: media::store::FileStore,
    pub media_upload_limiter: rate_limit::RateLimiter,
    /// Thumbnails made at once (each decodes a whole picture).
    pub(crate) thumbnail_slots: tokio::sync::Semaphore,
    /// Remote users whose device list is being fetched again.
    pub(crate) device_list_resyncs: std::sync::Mutex<std::collections::HashSet<String>>,
    /// URL previews, when `url_preview_enabled`.
    pub(crate) previews: Option<media::preview::Previews>,
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
        let uiaa_lifetime = std::time::Duration::from_secs(config.uiaa_session_timeout);
        let stream = Arc::new(Stream::new(&db).map_err(|e| StartError::Load(e.to_string()))?);
        let rooms = Rooms::new(db.clone(), stream.clone());
        let sso = Sso::new(&config).map_err(StartError::Http)?;
        let federation = federation::Federation::new(&config);
        let services = Arc::new(Self {
            sso,
            federation,
            metrics: metrics::Metrics::default(),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            server_keys,
            short_ids,
            user_locks: UserLocks::new(256),
            state_snapshots: StateSnapshots::new(db.clone(), config.state_cache_entries),
            rooms,
            stream: stream.clone(),
            typing: Typing::default(),
            push_cache: PushCache::default(),
            member_summaries: MemberSummaries::default(),
            auth_events_cache: AuthEventsCache::default(),
            presence: Presence::default(),
            sliding_sync_connections: sliding_sync::Connections::default(),
            oauth: oauth::OAuth::default(),
            account_sessions: account_page::AccountSessions::default(),
            users: Users::new(db.clone(), &config.server_name),
            devices: Devices::new(db.clone(), config.refreshable_access_token_lifetime * 1000),
            uiaa: Uiaa::new(uiaa_lifetime),
            registration_tokens: RegistrationTokens::new(db.clone(), uiaa_lifetime),
            token_validity_limiter: rate_limit::RateLimiter::new(
                30,
                std::time::Duration::from_secs(60),
            ),
            sso_start_limiter: rate_limit::RateLimiter::new(30, std::time::Duration::from_secs(60)),
            account_data: AccountData::new(db.clone(), stream.clone()),
            filters: Filters::new(db.clone()),
            key_claims: std::sync::Mutex::new(()),
            to_device_pending: e2ee::to_device::PendingCounts::default(),
            media_store: media::store::FileStore::new(config.media_dir()),
            media_upload_limiter: rate_limit::RateLimiter::new(
                config.media_uploads_per_minute,
                std::time::Duration::from_secs(60),
            ),
            thumbnail_slots: tokio::sync::Semaphore::new(2),
            device_list_resyncs: std::sync::Mutex::default(),
            pushers: push::Pushers::load(&db).map_err(|e| StartError::Load(e.to_string()))?,
            appservices: appservice::Appservices::load(
                &db,
                &config.appservice_registration_files,
                config.server_name.as_str(),
            )
            .map_err(StartError::Appservice)?,
            previews: match config.url_preview_enabled {
                true => Some(media::preview::Previews::new(
                    config.ip_policy().map_err(StartError::Load)?,
                )),
                false => None,
            },
            db,
            config,
        });
        let orphans = services
            .media_store
            .open(|sha256| services.media_file_is_referenced(sha256))
            .map_err(|e| StartError::Load(e.to_string()))?;
        if orphans > 0 {
            tracing::info!(orphans, "removed media files no media refers to");
        }
        for appservice in services.appservices.registry().all() {
            services
                .ensure_appservice_sender(appservice)
                .map_err(|e| StartError::Load(e.to_string()))?;
        }
        Ok(services)
    }
}

impl Services {
    /// Runs `job` every `period` while the server lives (the task holds no
    /// strong reference: it ends when the services are dropped).
    pub(crate) fn every(
        self: &Arc<Self>,
        period: std::time::Duration,
        what: &'static str,
        job: fn(&Self) -> Result<()>,
    ) {
        let services = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            loop {
                ticks.tick().await;
                let Some(services) = services.upgrade() else {
                    return;
                };
                if let Err(e) = job(&services) {
                    tracing::warn!("{what} failed: {e}");
                }
            }
        });
    }
}
