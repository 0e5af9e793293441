//! `[global.sso]` and its `[[global.sso.providers]]`: which identity
//! providers people may sign in with. The key names are fixed (configs and
//! tests rely on them); `conduit.toml.example` documents each.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

/// The longest a login token may live: the spec asks for a short-lived
/// token, and Synapse uses two minutes.
pub const MAX_LOGIN_TOKEN_LIFETIME: u64 = 120;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct SsoConfig {
    pub providers: Vec<ProviderConfig>,
    /// `false` turns password login off for everyone: a server whose people
    /// all come from its identity providers.
    pub password_login: bool,
    /// Seconds a `m.login.token` handed to the client stays valid (at most 120).
    pub login_token_lifetime: u64,
}

impl Default for SsoConfig {
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            password_login: true,
            login_token_lifetime: MAX_LOGIN_TOKEN_LIFETIME,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ProviderConfig {
    /// In URLs and in `GET /login`: `[a-z0-9._~-]`, at most 255 characters.
    pub id: String,
    /// Shown to people: "Sign in with <name>".
    pub name: String,
    /// An `mxc://` URI (sent to clients) or an `https://` URL (shown on pages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    /// A brand hint for clients (`github`, `gitlab`, `google`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// Whether a new identity may create an account (else only mapped ones log in).
    #[serde(default = "yes")]
    pub allow_registration: bool,
    /// Also accepted here: `false` in any provider turns password login off,
    /// like `[global.sso] password_login = false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_login: Option<bool>,
    #[serde(flatten)]
    pub kind: ProviderKind,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProviderKind {
    Oidc(OidcConfig),
    Mastodon(MastodonConfig),
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct OidcConfig {
    /// Discovery reads `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// A file holding the secret, read at start (keeps it out of the config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "default_localpart_claim")]
    pub localpart_claim: String,
    #[serde(default = "default_displayname_claim")]
    pub displayname_claim: String,
    #[serde(default = "default_avatar_claim")]
    pub avatar_claim: String,
    /// Claim name -> the value (or any of the values) it must have. A claim
    /// holding a list (e.g. `groups`) passes when it contains one of them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allowed_claims: BTreeMap<String, ClaimValues>,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into()]
}
fn default_localpart_claim() -> String {
    "preferred_username".into()
}
fn default_displayname_claim() -> String {
    "name".into()
}
fn default_avatar_claim() -> String {
    "picture".into()
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ClaimValues {
    One(String),
    Any(Vec<String>),
}

impl ClaimValues {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Self::One(value) => std::slice::from_ref(value),
            Self::Any(values) => values,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct MastodonConfig {
    /// The instance's base URL, e.g. `https://social.example`.
    pub instance: String,
}

impl SsoConfig {
    /// Whether people may log in with a password.
    pub fn password_login_enabled(&self) -> bool {
        self.password_login
            && self
                .providers
                .iter()
                .all(|p| p.password_login != Some(false))
    }

    /// Checks every provider, and reads secrets from their files.
    pub(crate) fn validate(&mut self) -> Result<(), String> {
        if self.login_token_lifetime == 0 || self.login_token_lifetime > MAX_LOGIN_TOKEN_LIFETIME {
            return Err(format!(
                "sso.login_token_lifetime must be between 1 and {MAX_LOGIN_TOKEN_LIFETIME} seconds"
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for provider in &mut self.providers {
            let id = &provider.id;
            let valid_id = !id.is_empty()
                && id.len() <= 255
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._~-".contains(&b));
            if !valid_id {
                return Err(format!(
                    "sso provider id `{id}`: use 1 to 255 of a-z, 0-9, '.', '_', '~', '-'"
                ));
            }
            if !seen.insert(id.clone()) {
                return Err(format!("sso provider id `{id}` is used twice"));
            }
            let context = format!("sso provider `{id}`");
            match &mut provider.kind {
                ProviderKind::Oidc(oidc) => {
                    check_base_url(&oidc.issuer, &format!("{context}: issuer"))?;
                    if let Some(path) = oidc.client_secret_file.take() {
                        let secret = std::fs::read_to_string(&path).map_err(|e| {
                            format!("{context}: cannot read client_secret_file {path}: {e}")
                        })?;
                        oidc.client_secret = Some(secret.trim().to_owned());
                    }
                    if !oidc.scopes.iter().any(|s| s == "openid") {
                        oidc.scopes.insert(0, "openid".into());
                    }
                }
                ProviderKind::Mastodon(mastodon) => {
                    check_base_url(&mastodon.instance, &format!("{context}: instance"))?;
                    mastodon.instance = mastodon.instance.trim_end_matches('/').to_owned();
                }
            }
        }
        Ok(())
    }
}

/// An `https://` URL, or plain `http://` to a loopback address (tests, a
/// provider on the same host).
pub(crate) fn check_base_url(url: &str, what: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{what} `{url}` is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&parsed) => Ok(()),
        _ => Err(format!(
            "{what} `{url}` must use https:// (http:// only for loopback addresses)"
        )),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(kind: ProviderKind) -> ProviderConfig {
        ProviderConfig {
            id: "idp".into(),
            name: "IdP".into(),
            icon: None,
            brand: None,
            allow_registration: true,
            password_login: None,
            kind,
        }
    }

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(check_base_url("https://social.example", "x").is_ok());
        assert!(check_base_url("http://127.0.0.1:3000", "x").is_ok());
        assert!(check_base_url("http://[::1]:3000", "x").is_ok());
        assert!(check_base_url("http://localhost:3000", "x").is_ok());
        assert!(check_base_url("http://social.example", "x").is_err());
        assert!(check_base_url("ftp://127.0.0.1", "x").is_err());
        assert!(check_base_url("social.example", "x").is_err());
    }

    #[test]
    fn ids_are_checked_and_unique() {
        let mastodon = || {
            provider(ProviderKind::Mastodon(MastodonConfig {
                instance: "https://social.example/".into(),
            }))
        };
        let mut config = SsoConfig {
            providers: vec![mastodon()],
            ..SsoConfig::default()
        };
        config.validate().unwrap();
        let ProviderKind::Mastodon(m) = &config.providers[0].kind else {
            unreachable!()
        };
        assert_eq!(
            m.instance, "https://social.example",
            "trailing slash dropped"
        );

        config.providers.push(mastodon());
        assert!(config.validate().unwrap_err().contains("twice"));

        config.providers.truncate(1);
        config.providers[0].id = "Big Id".into();
        assert!(config.validate().is_err());
    }

    #[test]
    fn password_login_off_in_either_place() {
        let mut config = SsoConfig::default();
        assert!(config.password_login_enabled());
        let mut p = provider(ProviderKind::Mastodon(MastodonConfig {
            instance: "https://social.example".into(),
        }));
        p.password_login = Some(false);
        config.providers.push(p);
        assert!(!config.password_login_enabled());
        config.providers[0].password_login = None;
        config.password_login = false;
        assert!(!config.password_login_enabled());
    }
}
