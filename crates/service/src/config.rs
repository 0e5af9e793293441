//! `conduit.toml`: a `[global]` table whose keys match Conduit 0.10's where
//! the concept exists, every key overridable by a `CONDUIT_<KEY>` variable.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
    value::Value,
};
use ruma::{OwnedServerName, ServerName};
use serde::{Deserialize, Serialize};

/// Keys of Conduit 0.10 that this server accepts but does not act on (yet):
/// an existing Conduit config starts unchanged, with a warning naming them.
const CONDUIT_KEYS_NOT_USED: &[&str] = &[
    "allow_check_for_updates",
    "allow_encryption",
    "allow_jaeger",
    "allow_room_creation",
    "allow_unstable_room_versions",
    "cleanup_second_interval",
    "conduit_cache_capacity_modifier",
    "default_room_version",
    "emergency_password",
    "enable_lightning_bolt",
    "jwt_secret",
    "max_concurrent_requests",
    "max_fetch_prev_events",
    "media",
    "openid_token_ttl",
    "pdu_cache_capacity",
    "proxy",
    "rocksdb_max_open_files",
    "tracing_flame",
    "turn_password",
    "turn_secret",
    "turn_ttl",
    "turn_uris",
    "turn_username",
];

/// The whole configuration. See `conduit.toml.example` for what each key does.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Config {
    pub server_name: OwnedServerName,
    pub database_backend: String,
    pub database_path: PathBuf,
    /// RocksDB block cache, in MiB.
    pub db_cache_capacity_mb: f64,
    /// Room states kept decoded in memory (each is one room's full state map).
    pub state_cache_entries: usize,
    pub address: IpAddr,
    pub port: u16,
    pub max_request_size: u32,
    pub allow_registration: bool,
    pub registration_token: Option<String>,
    pub registration_requires_token: bool,
    pub allow_guest_registration: bool,
    pub allow_federation: bool,
    pub trusted_servers: Vec<OwnedServerName>,
    /// Federation over TLS on its own port (`federation_port`), with these
    /// PEM files; without them federation is served on `port` behind a
    /// reverse proxy that terminates TLS.
    pub tls: Option<TlsConfig>,
    /// The port of the TLS listener (only with `tls`).
    pub federation_port: u16,
    /// Check the certificates of other servers. Only a test bed of servers
    /// with self-signed certificates turns this off.
    pub federation_verify_certificates: bool,
    /// When not empty, the only servers this one federates with.
    pub federation_domain_allowlist: Vec<OwnedServerName>,
    /// Servers this one never federates with.
    pub federation_domain_denylist: Vec<OwnedServerName>,
    /// Seconds an outbound federation request may take.
    pub federation_timeout: u64,
    /// Whether other servers may list this server's room directory.
    pub allow_public_rooms_over_federation: bool,
    pub log: String,
    /// `text` (one readable line per event) or `json` (one object per line).
    pub log_format: LogFormat,
    /// Where `/metrics` is served (e.g. `127.0.0.1:9090`); off when unset,
    /// and never on the client or federation port.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Lifetime of an access token issued together with a refresh token, in seconds.
    pub refreshable_access_token_lifetime: u64,
    /// How long a user-interactive auth session (and the registration-token
    /// use it reserved) lives, in seconds.
    pub uiaa_session_timeout: u64,
    /// To-device messages kept for one device that does not sync; newer
    /// ones are dropped beyond it.
    pub to_device_queue_limit: usize,
    /// Where media files are kept; `<database_path>/media` when unset.
    pub media_path: Option<PathBuf>,
    /// Media uploaded before this time (ms since 1970) is still served by
    /// the old unauthenticated `/_matrix/media/v3` routes; 0: none is.
    pub unauthenticated_media_before: u64,
    /// Uploads a user may make per minute.
    pub media_uploads_per_minute: u32,
    /// Whether `preview_url` fetches pages users are about to send.
    pub url_preview_enabled: bool,
    /// IP ranges previews never connect to.
    pub url_preview_ip_range_denylist: Vec<String>,
    /// IP ranges previews may connect to even when denied above.
    pub url_preview_ip_range_allowlist: Vec<String>,
    /// Application-service registration files (YAML), read at start.
    pub appservice_registration_files: Vec<PathBuf>,
    pub well_known: WellKnown,
    /// Single sign-on: identity providers and password login.
    pub sso: crate::sso::config::SsoConfig,
    /// True when no config file was given: a loopback development server.
    #[serde(skip)]
    pub development: bool,
}

/// The TLS listeners' certificate: PEM files, or obtained by ACME.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct TlsConfig {
    /// The PEM certificate chain (not with `acme`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certs: Option<PathBuf>,
    /// The PEM private key (not with `acme`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Where the TLS listeners listen, when not on `address`: a server
    /// without a reverse proxy keeps plain HTTP on loopback and serves TLS
    /// to the world.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::IpAddr>,
    /// A second TLS listener besides `federation_port`, for apps at
    /// `https://server_name` (and ACME's validation, which comes to 443).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_port: Option<u16>,
    /// Certificates for the server name from an ACME CA (Let's Encrypt),
    /// by the TLS-ALPN-01 challenge, renewed before they expire.
    #[serde(default)]
    pub acme: bool,
    /// A contact for the CA's expiry and policy notices, e.g. an e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme_contact: Option<String>,
    /// The CA's directory URL.
    #[serde(default = "TlsConfig::letsencrypt")]
    pub acme_directory: String,
    /// A PEM CA certificate the directory's HTTPS is checked against
    /// (a private or test CA); the public roots otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme_ca_certificate: Option<PathBuf>,
}

/// Where the TLS certificate comes from.
#[derive(Clone, Copy, Debug)]
pub enum CertSource<'a> {
    Files { certs: &'a Path, key: &'a Path },
    Acme,
}

impl TlsConfig {
    /// Let's Encrypt's production directory.
    pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

    fn letsencrypt() -> String {
        Self::LETSENCRYPT.to_owned()
    }

    /// The certificate's source: ACME, or both files (checked at load).
    pub fn source(&self) -> CertSource<'_> {
        match (&self.certs, &self.key) {
            (Some(certs), Some(key)) if !self.acme => CertSource::Files { certs, key },
            _ => CertSource::Acme,
        }
    }

    /// The second listener's port: 443 with ACME unless set.
    pub fn https_port(&self) -> Option<u16> {
        self.https_port.or(self.acme.then_some(443))
    }

    fn validate(&self) -> Result<(), String> {
        match (self.acme, &self.certs, &self.key) {
            (true, None, None) => Ok(()),
            (true, _, _) => Err(
                "[global.tls]: `acme = true` gets the certificate itself: remove `certs` and `key`"
                    .into(),
            ),
            (false, Some(_), Some(_)) => Ok(()),
            (false, _, _) => {
                Err("[global.tls] needs `certs` and `key` (PEM files), or `acme = true`".into())
            }
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct WellKnown {
    /// Base URL clients should use, e.g. `https://matrix.example.org`.
    pub client: Option<String>,
    /// `host:port` other servers should use for federation.
    pub server: Option<String>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read config file {0}: file not found")]
    Missing(PathBuf),
}

/// A loaded configuration and what the admin should be told about it.
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

impl Config {
    fn defaults(development: bool) -> Self {
        Self {
            server_name: ServerName::parse("localhost")
                .expect("valid server name")
                .to_owned(),
            database_backend: "rocksdb".into(),
            database_path: PathBuf::from("./conduit-data"),
            db_cache_capacity_mb: 300.0,
            state_cache_entries: 1024,
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8008,
            max_request_size: 20_000_000,
            // A development server is open; a configured one only lets people
            // in who hold a token.
            allow_registration: true,
            registration_token: None,
            registration_requires_token: !development,
            allow_guest_registration: false,
            allow_federation: true,
            trusted_servers: vec![
                ServerName::parse("matrix.org")
                    .expect("valid server name")
                    .to_owned(),
            ],
            tls: None,
            federation_port: 8448,
            federation_verify_certificates: true,
            federation_domain_allowlist: Vec::new(),
            federation_domain_denylist: Vec::new(),
            federation_timeout: 60,
            allow_public_rooms_over_federation: false,
            log: "info".into(),
            log_format: LogFormat::Text,
            metrics_address: None,
            refreshable_access_token_lifetime: 300,
            to_device_queue_limit: 10_000,
            media_path: None,
            unauthenticated_media_before: 0,
            media_uploads_per_minute: 60,
            url_preview_enabled: false,
            url_preview_ip_range_denylist: crate::outbound::DEFAULT_DENYLIST
                .iter()
                .map(|r| (*r).to_owned())
                .collect(),
            url_preview_ip_range_allowlist: Vec::new(),
            appservice_registration_files: Vec::new(),
            uiaa_session_timeout: 15 * 60,
            well_known: WellKnown::default(),
            sso: Default::default(),
            development,
        }
    }

    /// The directory of media files.
    pub fn media_dir(&self) -> PathBuf {
        self.media_path
            .clone()
            .unwrap_or_else(|| self.database_path.join("media"))
    }

    /// Loads the config from `path` (if any), then `CONDUIT_*` variables.
    /// Without a file and without `CONDUIT_SERVER_NAME` it is a development
    /// server; with the variable it is configured by the environment alone
    /// (a container), and as closed as one configured by a file.
    pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
        let development = path.is_none() && std::env::var_os("CONDUIT_SERVER_NAME").is_none();
        let mut figment = Figment::from(Serialized::defaults(Self::defaults(development)));
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::Missing(path.to_owned()));
            }
            figment = figment.merge(Toml::file(path).nested());
        }
        // `CONDUIT_WELL_KNOWN__CLIENT` sets `well_known.client`.
        let env = Env::prefixed("CONDUIT_")
            .ignore(&["config"])
            .split("__")
            .global();
        figment = figment.merge(env);

        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(describe(e)))?;
        config.development = development;
        config.validate()?;
        config.sso.validate().map_err(ConfigError::Invalid)?;

        let mut warnings = Vec::new();
        let keys: BTreeMap<String, Value> = figment.extract().unwrap_or_default();
        let known = Self::known_keys();
        let (ignored, unknown): (Vec<&String>, Vec<&String>) = keys
            .keys()
            .filter(|k| !known.contains(k))
            .partition(|k| CONDUIT_KEYS_NOT_USED.contains(&k.as_str()));
        if !unknown.is_empty() {
            warnings.push(format!("unknown config keys, ignored: {}", join(&unknown)));
        }
        if !ignored.is_empty() {
            warnings.push(format!(
                "Conduit config keys this server does not use yet, ignored: {}",
                join(&ignored)
            ));
        }
        if development {
            warnings.push(format!(
                "no config file or CONDUIT_SERVER_NAME given: serving a development homeserver '{}' on {}:{} \
                 with OPEN registration (pass --config or CONDUIT_CONFIG for production)",
                config.server_name, config.address, config.port
            ));
        } else if config.allow_registration && !config.registration_requires_token {
            warnings.push("registration is open to anyone who can reach this server".into());
        }
        Ok(Loaded { config, warnings })
    }

    /// The top-level keys this server reads, taken from the struct itself so
    /// the list cannot drift from it.
    fn known_keys() -> Vec<String> {
        match serde_json::to_value(Self::defaults(true)) {
            Ok(serde_json::Value::Object(map)) => map.into_iter().map(|(k, _)| k).collect(),
            _ => Vec::new(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(tls) = &self.tls {
            tls.validate().map_err(ConfigError::Invalid)?;
        }
        if self.database_backend != "rocksdb" {
            return Err(ConfigError::Invalid(format!(
                "database_backend = \"{}\": only \"rocksdb\" is supported",
                self.database_backend
            )));
        }
        if self.max_request_size < 4096 {
            return Err(ConfigError::Invalid(
                "max_request_size must be at least 4096 bytes".into(),
            ));
        }
        if self.db_cache_capacity_mb.is_nan() || self.db_cache_capacity_mb < 0.0 {
            return Err(ConfigError::Invalid(
                "db_cache_capacity_mb must be a non-negative number".into(),
            ));
        }
        if let Some(token) = &self.registration_token
            && token.is_empty()
        {
            return Err(ConfigError::Invalid(
                "registration_token must not be empty (remove the key instead)".into(),
            ));
        }
        if self.uiaa_session_timeout == 0 {
            return Err(ConfigError::Invalid(
                "uiaa_session_timeout must be at least 1 second".into(),
            ));
        }
        if self.refreshable_access_token_lifetime == 0 {
            return Err(ConfigError::Invalid(
                "refreshable_access_token_lifetime must be at least 1 second".into(),
            ));
        }
        if self.federation_timeout == 0 {
            return Err(ConfigError::Invalid(
                "federation_timeout must be at least 1 second".into(),
            ));
        }
        self.ip_policy()
            .map_err(|e| ConfigError::Invalid(format!("url_preview_ip_range_*: {e}")))?;
        Ok(())
    }

    /// The IP ranges requests to addresses users choose (previews, push
    /// gateways, SSO avatars) may reach.
    pub fn ip_policy(&self) -> Result<crate::outbound::IpPolicy, String> {
        crate::outbound::IpPolicy::new(
            &self.url_preview_ip_range_denylist,
            &self.url_preview_ip_range_allowlist,
        )
    }

    /// Whether this server federates with `server` (federation on, and the
    /// allow- and denylists let it through).
    pub fn federates_with(&self, server: &ServerName) -> bool {
        self.allow_federation
            && server != self.server_name
            && !self.federation_domain_denylist.iter().any(|s| s == server)
            && (self.federation_domain_allowlist.is_empty()
                || self.federation_domain_allowlist.iter().any(|s| s == server))
    }

    /// The base URL clients are told to use in `/.well-known/matrix/client`.
    pub fn client_base_url(&self) -> String {
        match &self.well_known.client {
            Some(url) => url.clone(),
            None if self.development => format!("http://{}:{}", self.address, self.port),
            None => format!("https://{}", self.server_name),
        }
    }
}

fn join(keys: &[&String]) -> String {
    keys.iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Figment's message, with its profile prefix ("default.port") reduced to the key.
fn describe(error: figment::Error) -> String {
    let mut parts = Vec::new();
    for e in error {
        let key = e.path.join(".");
        let source = match &e.metadata {
            Some(m) => match &m.source {
                Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
                _ if m.name.contains("environment") => format!(
                    " (from environment variable CONDUIT_{})",
                    e.path.join("__").to_uppercase()
                ),
                _ => format!(" (from {})", m.name),
            },
            None => String::new(),
        };
        let kind = e.kind.to_string();
        if key.is_empty() {
            parts.push(format!("invalid configuration: {kind}{source}"));
        } else {
            parts.push(format!(
                "invalid value for config key `{key}`: {kind}{source}"
            ));
        }
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn conduit_style_config_loads() {
        let f = file(
            "[global]\nserver_name = \"example.org\"\ndatabase_backend = \"rocksdb\"\n\
             database_path = \"/var/lib/conduit\"\nport = 6167\nallow_registration = true\n\
             registration_token = \"secret\"\n[global.well_known]\nclient = \"https://m.example.org\"\n",
        );
        let loaded = Config::load(Some(f.path())).unwrap();
        let c = loaded.config;
        assert_eq!(c.server_name.as_str(), "example.org");
        assert_eq!(c.port, 6167);
        assert_eq!(c.registration_token.as_deref(), Some("secret"));
        assert!(c.registration_requires_token, "production default");
        assert_eq!(c.client_base_url(), "https://m.example.org");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn unknown_and_unused_keys_are_named() {
        let f =
            file("[global]\nserver_name = \"x.org\"\nfrobnicate = 1\nallow_encryption = true\n");
        let warnings = Config::load(Some(f.path())).unwrap().warnings;
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("unknown") && w.contains("frobnicate"))
        );
        assert!(warnings.iter().any(|w| w.contains("allow_encryption")));
    }

    #[test]
    fn invalid_value_names_the_key() {
        let f = file("[global]\nserver_name = \"x.org\"\nport = \"eighty\"\n");
        let Err(e) = Config::load(Some(f.path())) else {
            panic!("must fail")
        };
        assert!(e.to_string().contains("port"), "{e}");

        let f = file("[global]\nserver_name = \"not a server name!\"\n");
        let Err(e) = Config::load(Some(f.path())) else {
            panic!("must fail")
        };
        assert!(e.to_string().contains("server_name"), "{e}");

        let f = file("[global]\nserver_name = \"x.org\"\ndatabase_backend = \"sqlite\"\n");
        assert!(Config::load(Some(f.path())).is_err());
    }

    #[test]
    fn example_config_loads_and_documents_every_key() {
        let example = include_str!("../../../conduit.toml.example");
        let f = file(example);
        let loaded = Config::load(Some(f.path())).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        for key in Config::known_keys() {
            if key == "well_known" || key == "sso" || key == "tls" {
                continue;
            }
            assert!(
                example.contains(&format!("\n{key} = ")) || example.contains(&format!("#{key} = ")),
                "conduit.toml.example does not document `{key}`"
            );
        }
        for key in [
            "client",
            "server",
            "certs",
            "key",
            "address",
            "acme",
            "acme_contact",
            "acme_directory",
            "acme_ca_certificate",
            "https_port",
        ] {
            assert!(
                example.contains(&format!("#{key} = ")),
                "well_known.{key} undocumented"
            );
        }
        let provider_keys = [
            "password_login",
            "login_token_lifetime",
            "id",
            "name",
            "icon",
            "brand",
            "kind",
            "allow_registration",
            "issuer",
            "client_id",
            "client_secret",
            "client_secret_file",
            "scopes",
            "localpart_claim",
            "displayname_claim",
            "avatar_claim",
            "allowed_claims",
            "instance",
        ];
        for key in provider_keys {
            assert!(
                example.contains(&format!("#{key} = ")),
                "sso key {key} undocumented"
            );
        }
    }

    #[test]
    fn no_file_means_open_development_server() {
        let c = Config::load(None).unwrap().config;
        assert!(c.development);
        assert_eq!(c.server_name.as_str(), "localhost");
        assert_eq!(c.port, 8008);
        assert!(c.allow_registration && !c.registration_requires_token);
    }
}
