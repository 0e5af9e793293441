//! Single sign-on: the Matrix SSO flow (`m.login.sso`, then `m.login.token`)
//! over two kinds of identity provider, OpenID Connect ([`oidc`]) and
//! Mastodon instances ([`mastodon`]).
//!
//! A sign-in is a *flow*, kept here in memory for [`FLOW_LIFETIME`] under a
//! random `state`: which provider, what for (a login for a client's
//! `redirectUrl`, or re-authentication inside a UIA session), the nonce and
//! PKCE verifier, and the browser it started in (a cookie), so a callback
//! link cannot be replayed in someone else's browser. A new identity becomes
//! a *signup* until the person picks a username. A finished login hands
//! the client a single-use login token living at most two minutes.
//!
//! What is stored: `(provider, subject) -> user` and its reverse
//! (`sso_identities`, `user_sso_identities`), and the apps registered on
//! Mastodon instances (`sso_apps`). A restart forgets flows in progress;
//! people start again.

pub mod config;
mod fresh;
mod http;
pub mod mastodon;
mod oidc;

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use conduit_storage::{KeyPrefix, Str};
use ruma::{OwnedUserId, UserId};

use self::{
    config::{ProviderConfig, ProviderKind},
    http::HttpClient,
    mastodon::Mastodon,
    oidc::Oidc,
};
use crate::{Config, Services, tables, utils};

/// Where providers send the browser back: `<base>/_conduit/sso/callback/<id>`.
pub const CALLBACK_PATH: &str = "/_conduit/sso/callback";
/// The cookie that ties a flow to the browser that started it. Behind
/// https it carries the `__Host-` prefix, so no sibling subdomain can plant
/// one (a planted value would let someone finish their flow in your browser).
pub fn browser_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-conduit_sso_browser"
    } else {
        "conduit_sso_browser"
    }
}

/// The browser cookie's value: the one the browser sent, if well formed,
/// else a new one.
pub fn browser_value(sent: Option<&str>) -> String {
    sent.filter(|b| b.len() == 32 && b.bytes().all(|c| c.is_ascii_alphanumeric()))
        .map_or_else(|| utils::random_string(32), str::to_owned)
}

/// Time to sign in at the provider.
const FLOW_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Time to pick a username.
const SIGNUP_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Pending flows, signups or login tokens kept at most: anyone can start flows.
const MAX_PENDING: usize = 10_000;
/// Longest client `redirectUrl` accepted.
const MAX_REDIRECT_URL: usize = 2048;

/// What went wrong, told to a person on a page (details go to the log).
#[derive(Debug)]
pub struct SsoError {
    pub status: u16,
    pub message: String,
}

impl SsoError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// The provider answered in a way we cannot use: logged in full, shown short.
    fn provider(name: &str, detail: impl std::fmt::Display) -> Self {
        tracing::warn!(provider = %name, "single sign-on failed: {detail}");
        Self::new(
            502,
            format!(
                "{name} did not answer as expected, so you could not be signed in. \
                 Try again in a moment; if it keeps happening, tell this server's admin."
            ),
        )
    }

    fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!("single sign-on failed: {detail}");
        Self::new(
            500,
            "Something went wrong on this server. Try again in a moment.",
        )
    }

    fn expired() -> Self {
        Self::new(
            400,
            "This sign-in attempt is unknown or has expired. Start again from your Matrix app.",
        )
    }
}

impl From<crate::Error> for SsoError {
    fn from(e: crate::Error) -> Self {
        let status = e.status();
        match e {
            crate::Error::Matrix { message, .. } if status < 500 => Self::new(status, message),
            other => Self::internal(other),
        }
    }
}

/// What a flow keeps secret until its callback.
#[derive(Default)]
pub(crate) struct FlowSecrets {
    nonce: Option<String>,
    pkce_verifier: Option<String>,
}

/// Who signed in at a provider.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Stable at that provider: OIDC `sub`, a Mastodon account's URI.
    pub subject: String,
    pub localpart: Option<String>,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
}

/// What a sign-in is for.
#[derive(Clone, Debug)]
pub enum Purpose {
    /// A login: the client waits at `redirect_url` for a login token.
    Login { redirect_url: String },
    /// Proving it is them inside a user-interactive auth session.
    Reauth {
        session: String,
        user_id: OwnedUserId,
    },
    /// Signing in for an OAuth 2.0 client's authorization (upstream SSO).
    OAuth { authorization: String },
    /// Signing in to the account management page, which then shows what
    /// `query` asks for.
    AccountPage { query: String },
}

/// Where a sign-in goes once the account is known.
#[derive(Clone, Debug)]
enum Then {
    /// A login token to the client at this address (the Matrix SSO flow).
    LoginToken(String),
    /// A code to the OAuth client of this authorization.
    OAuthCode(String),
    /// The account page, with this query.
    AccountPage(String),
}

struct Flow {
    provider: usize,
    purpose: Purpose,
    browser: String,
    secrets: FlowSecrets,
    expires_at: Instant,
}

struct Signup {
    /// Wrong passwords given to link an existing account.
    link_failures: u8,
    provider: usize,
    identity: Identity,
    then: Then,
    browser: String,
    expires_at: Instant,
}

/// What the browser is shown after the provider sent it back.
pub enum Outcome {
    /// "Continue to <client_host>?" with a link carrying the login token.
    Continue {
        user_id: OwnedUserId,
        redirect_url: String,
        client_host: String,
    },
    /// A new identity: the username form.
    ChooseUsername(SignupForm),
    /// The UIA stage is done: the page tells the client and can be closed.
    Reauthenticated,
    /// Straight back to an OAuth client, whose page the person saw before
    /// leaving for the provider.
    Redirect(String),
    /// Signed in to the account page: its session (a cookie), and the
    /// query to show it with.
    AccountPage { session: String, query: String },
}

/// The username form of a new identity.
pub struct SignupForm {
    pub signup: String,
    pub provider_name: String,
    pub username: String,
    pub display_name: Option<String>,
    pub error: Option<String>,
}

/// The provider's answer at the callback, as the browser brought it.
#[derive(Default)]
pub struct Callback<'a> {
    pub state: Option<&'a str>,
    pub code: Option<&'a str>,
    pub error: Option<&'a str>,
    pub error_description: Option<&'a str>,
    /// RFC 9207: the issuer that answered, when the provider says so.
    pub iss: Option<&'a str>,
}

enum Backend {
    Oidc(Oidc),
    Mastodon(Mastodon),
}

struct Provider {
    config: ProviderConfig,
    backend: Backend,
}

/// The providers and everything in progress.
pub struct Sso {
    providers: Vec<Provider>,
    /// Built at start when providers are configured (a failure stops the
    /// server with a clear message), never without: a server without SSO
    /// keeps the memory TLS roots and connection pools cost.
    http: Option<HttpClient>,
    base_url: String,
    token_lifetime: Duration,
    flows: Mutex<HashMap<String, Flow>>,
    signups: Mutex<HashMap<String, Signup>>,
    login_tokens: Mutex<HashMap<String, (OwnedUserId, Instant)>>,
    /// Creating an account for an identity: one at a time, so two tabs
    /// cannot make two accounts for one identity.
    account_lock: tokio::sync::Mutex<()>,
}

/// Keeps a pending map bounded: expired entries go, and when it is still
/// full the entry closest to expiring goes too. Refusing new entries instead
/// would let anyone who fills the map lock everybody out of signing in.
pub(crate) fn make_room<T>(map: &mut HashMap<String, T>, expires: impl Fn(&T) -> Instant) {
    let now = Instant::now();
    map.retain(|_, v| expires(v) > now);
    if map.len() >= MAX_PENDING
        && let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| expires(v))
            .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

impl Sso {
    pub(crate) fn new(config: &Config) -> Result<Self, String> {
        let providers = config
            .sso
            .providers
            .iter()
            .map(|p| Provider {
                backend: match &p.kind {
                    ProviderKind::Oidc(oidc) => Backend::Oidc(Oidc::new(oidc.clone())),
                    ProviderKind::Mastodon(m) => {
                        Backend::Mastodon(Mastodon::new(&p.id, &m.instance))
                    }
                },
                config: p.clone(),
            })
            .collect();
        Ok(Self {
            providers,
            http: if config.sso.providers.is_empty() {
                None
            } else {
                Some(
                    HttpClient::new()
                        .map_err(|e| format!("cannot build the HTTP client for SSO: {e}"))?,
                )
            },
            base_url: config.client_base_url().trim_end_matches('/').to_owned(),
            token_lifetime: Duration::from_secs(config.sso.login_token_lifetime),
            flows: Mutex::default(),
            signups: Mutex::default(),
            login_tokens: Mutex::default(),
            account_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The client identity providers are reached with.
    fn http(&self) -> Result<&HttpClient, SsoError> {
        // Providers exist whenever a flow reaches here, and so does the client.
        self.http
            .as_ref()
            .ok_or_else(|| SsoError::internal("no HTTP client without providers"))
    }

    /// The configured providers, in config order.
    pub fn providers(&self) -> impl Iterator<Item = &ProviderConfig> {
        self.providers.iter().map(|p| &p.config)
    }

    fn find(&self, id: &str) -> Option<(usize, &Provider)> {
        self.providers
            .iter()
            .enumerate()
            .find(|(_, p)| p.config.id == id)
    }

    /// The callback URL to register at provider `id`.
    pub fn callback_url(&self, id: &str) -> String {
        format!("{}{CALLBACK_PATH}/{id}", self.base_url)
    }

    /// A single-use login token for `user_id`.
    fn issue_login_token(&self, user_id: &UserId) -> Result<String, SsoError> {
        let mut tokens = utils::locked(&self.login_tokens);
        make_room(&mut tokens, |(_, at)| *at);
        let token = utils::random_string(32);
        tokens.insert(
            token.clone(),
            (user_id.to_owned(), Instant::now() + self.token_lifetime),
        );
        Ok(token)
    }

    /// The user a login token was issued for; the token is gone afterwards.
    pub fn take_login_token(&self, token: &str) -> Option<OwnedUserId> {
        let (user_id, expires_at) = utils::locked(&self.login_tokens).remove(token)?;
        (expires_at > Instant::now()).then_some(user_id)
    }
}

/// Schemes a browser runs or reads itself instead of handing to an app:
/// never a place for a login token.
const BROWSER_SCHEMES: &[&str] = &[
    "javascript",
    "data",
    "vbscript",
    "file",
    "blob",
    "about",
    "filesystem",
    "view-source",
    "ftp",
    "ws",
    "wss",
    "mailto",
];

/// `redirectUrl`: an absolute http(s) URL with a host, or an app's own
/// scheme (Element Desktop returns through `element://vector/webapp/…`,
/// mobile apps through theirs, as RFC 8252 describes). Schemes the browser
/// would run or read itself are refused.
pub fn check_redirect_url(url: &str) -> Result<url::Url, SsoError> {
    let bad = || {
        SsoError::new(
            400,
            "The app that sent you here gave an invalid return address (redirectUrl); \
             it must be an http or https URL, or an app's own address.",
        )
    };
    if url.len() > MAX_REDIRECT_URL {
        return Err(bad());
    }
    let parsed = url::Url::parse(url).map_err(|_| bad())?;
    match parsed.scheme() {
        "http" | "https" if parsed.host().is_some() => Ok(parsed),
        "http" | "https" => Err(bad()),
        scheme if BROWSER_SCHEMES.contains(&scheme) => Err(bad()),
        _ => Ok(parsed),
    }
}

/// The client's address with the login token added (any `loginToken`
/// already there removed, as the spec asks; the rest of the query kept
/// byte for byte), and the host to name on the confirmation page: the host
/// alone for https, more for anything else.
fn continue_url(redirect_url: &str, token: &str) -> Result<(String, String), SsoError> {
    let mut url = check_redirect_url(redirect_url)?;
    let mut query: Vec<&str> = url
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some("loginToken"))
        .collect();
    // The token is alphanumeric: nothing to encode.
    let token_pair = format!("loginToken={token}");
    query.push(&token_pair);
    let query = query.join("&");
    url.set_query(Some(&query));
    let host = url.host_str().unwrap_or_default();
    let shown = match (url.scheme(), url.port()) {
        ("https", None) => host.to_owned(),
        ("https", Some(port)) => format!("{host}:{port}"),
        (scheme, port) => format!(
            "{scheme}://{host}{}{}",
            port.map(|p| format!(":{p}")).unwrap_or_default(),
            url.path()
        ),
    };
    Ok((url.into(), shown))
}

/// A username suggestion from a provider's claim: lower-cased, characters
/// a localpart cannot hold replaced by `_`.
fn suggest_localpart(hint: &str) -> String {
    hint.trim()
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+' => c,
            _ => '_',
        })
        .take(64)
        .collect()
}

impl Services {
    /// Starts a sign-in at provider `id`: the provider's authorization URL,
    /// and the browser cookie value to set (the one the browser had, or a new one).
    pub async fn sso_start(
        &self,
        id: &str,
        purpose: Purpose,
        browser: Option<&str>,
    ) -> Result<(String, String), SsoError> {
        let Some((index, provider)) = self.sso.find(id) else {
            return Err(SsoError::new(
                404,
                "This server has no such sign-in provider.",
            ));
        };
        match &purpose {
            Purpose::Login { redirect_url } => {
                check_redirect_url(redirect_url)?;
            }
            Purpose::OAuth { authorization } if !self.oauth_is_pending(authorization, browser) => {
                return Err(SsoError::expired());
            }
            _ => {}
        }
        let browser = browser_value(browser);
        let state = utils::random_string(32);
        let name = &provider.config.name;
        let redirect_uri = self.sso.callback_url(id);
        let (url, secrets) = match &provider.backend {
            Backend::Oidc(oidc) => {
                oidc.authorize(self.sso.http()?, name, &redirect_uri, &state)
                    .await?
            }
            Backend::Mastodon(m) => {
                m.authorize(self.sso.http()?, &self.db, name, &redirect_uri, &state)
                    .await?
            }
        };
        let mut flows = utils::locked(&self.sso.flows);
        make_room(&mut flows, |f| f.expires_at);
        flows.insert(
            state,
            Flow {
                provider: index,
                purpose,
                browser: browser.clone(),
                secrets,
                expires_at: Instant::now() + FLOW_LIFETIME,
            },
        );
        Ok((url, browser))
    }

    /// The provider sent the browser back: checks the flow, asks the
    /// provider who signed in, and decides what comes next.
    pub async fn sso_callback(
        &self,
        id: &str,
        callback: Callback<'_>,
        browser: Option<&str>,
    ) -> Result<Outcome, SsoError> {
        let state = callback.state.ok_or_else(SsoError::expired)?;
        let flow = {
            let mut flows = utils::locked(&self.sso.flows);
            // A state is used once, whatever happens next.
            let flow = flows.remove(state).ok_or_else(SsoError::expired)?;
            if flow.expires_at <= Instant::now()
                || self.sso.providers[flow.provider].config.id != id
            {
                return Err(SsoError::expired());
            }
            flow
        };
        if browser != Some(flow.browser.as_str()) {
            return Err(SsoError::new(
                403,
                "This sign-in was started in another browser (or cookies are blocked). \
                 Start again from your Matrix app, in this browser.",
            ));
        }
        let provider = &self.sso.providers[flow.provider];
        let name = &provider.config.name;
        if let Some(error) = callback.error {
            let why = callback.error_description.unwrap_or(error);
            return Err(SsoError::new(
                403,
                format!("{name} did not sign you in: {why}"),
            ));
        }
        let code = callback
            .code
            .ok_or_else(|| SsoError::provider(name, "the callback has no code"))?;
        let redirect_uri = self.sso.callback_url(id);
        let identity = match &provider.backend {
            Backend::Oidc(oidc) => {
                oidc.identify(
                    self.sso.http()?,
                    name,
                    &redirect_uri,
                    code,
                    callback.iss,
                    flow.secrets,
                )
                .await?
            }
            Backend::Mastodon(m) => {
                m.identify(
                    self.sso.http()?,
                    &self.db,
                    name,
                    &redirect_uri,
                    code,
                    flow.secrets,
                )
                .await?
            }
        };
        let known = self.sso_user(id, &identity.subject)?;
        tracing::info!(provider = %id, subject = %identity.subject, user = ?known, "signed in at the identity provider");

        match flow.purpose {
            Purpose::Reauth { session, user_id } => {
                if known.as_deref() != Some(&*user_id) {
                    return Err(SsoError::new(
                        403,
                        format!("This {name} account is not the one linked to {user_id}."),
                    ));
                }
                self.uiaa
                    .complete_stage(&session, &user_id, ruma::api::client::uiaa::AuthType::Sso)
                    .map_err(|why| SsoError::new(400, why))?;
                Ok(Outcome::Reauthenticated)
            }
            Purpose::Login { redirect_url } => self.sso_signed_in(
                known,
                flow.provider,
                flow.browser,
                identity,
                Then::LoginToken(redirect_url),
            ),
            Purpose::OAuth { authorization } => self.sso_signed_in(
                known,
                flow.provider,
                flow.browser,
                identity,
                Then::OAuthCode(authorization),
            ),
            Purpose::AccountPage { query } => match known {
                Some(user_id) => self.sso_continue(user_id, &Then::AccountPage(query)),
                None => Err(SsoError::new(
                    403,
                    format!("This {name} account is not linked to an account on this server."),
                )),
            },
        }
    }

    /// A sign-in for a login: the known account goes on, a new identity
    /// picks a username (where the provider may create accounts).
    fn sso_signed_in(
        &self,
        known: Option<OwnedUserId>,
        provider: usize,
        browser: String,
        identity: Identity,
        then: Then,
    ) -> Result<Outcome, SsoError> {
        let config = &self.sso.providers[provider].config;
        match known {
            Some(user_id) => self.sso_continue(user_id, &then),
            None if !config.allow_registration => Err(SsoError::new(
                403,
                format!(
                    "Your {name} account has no account on this server, and this server \
                     does not create accounts through {name}.",
                    name = config.name
                ),
            )),
            None => self.sso_new_signup(provider, identity, then, browser),
        }
    }

    /// The user an identity signs in, if it is known.
    fn sso_user(&self, provider: &str, subject: &str) -> Result<Option<OwnedUserId>, SsoError> {
        let user = self
            .db
            .get(&tables::SSO_IDENTITIES, (provider, subject))
            .map_err(SsoError::internal)?;
        Ok(user.and_then(|u| UserId::parse(u).ok()))
    }

    /// `user_id`'s identities: (provider id, subject), for the admin API.
    pub fn sso_identities_of(&self, user_id: &UserId) -> crate::Result<Vec<(String, String)>> {
        let prefix = KeyPrefix::new().push::<Str>(user_id.as_str());
        self.db
            .scan_prefix(&tables::USER_SSO_IDENTITIES, &prefix)?
            .map(|row| {
                let ((_, provider, subject), _) = row?;
                Ok((provider, subject))
            })
            .collect()
    }

    /// Removes `user_id`'s identities at `provider`; how many there were.
    pub fn sso_unlink(&self, user_id: &UserId, provider: &str) -> crate::Result<usize> {
        let subjects: Vec<String> = self
            .sso_identities_of(user_id)?
            .into_iter()
            .filter(|(p, _)| p == provider)
            .map(|(_, subject)| subject)
            .collect();
        let mut batch = self.db.batch();
        for subject in &subjects {
            batch.delete(&tables::SSO_IDENTITIES, (provider, subject.as_str()))?;
            batch.delete(
                &tables::USER_SSO_IDENTITIES,
                (user_id.as_str(), provider, subject.as_str()),
            )?;
        }
        self.db.write(batch)?;
        if !subjects.is_empty() {
            tracing::info!(%user_id, %provider, "unlinked single sign-on identities");
        }
        Ok(subjects.len())
    }

    /// The configured providers `user_id` has an identity at (the re-auth page).
    pub fn sso_providers_of(&self, user_id: &UserId) -> crate::Result<Vec<ProviderConfig>> {
        let ids = self.sso_identities_of(user_id)?;
        Ok(self
            .sso
            .providers()
            .filter(|p| ids.iter().any(|(id, _)| *id == p.id))
            .cloned()
            .collect())
    }

    fn sso_continue(&self, user_id: OwnedUserId, then: &Then) -> Result<Outcome, SsoError> {
        let account = self.users.account(&user_id)?;
        if account.is_none_or(|a| a.deactivated) {
            return Err(SsoError::new(403, "This account has been deactivated."));
        }
        let redirect_url = match then {
            Then::LoginToken(redirect_url) => redirect_url,
            Then::OAuthCode(authorization) => {
                return Ok(Outcome::Redirect(
                    self.oauth_signed_in(authorization, &user_id)?,
                ));
            }
            Then::AccountPage(query) => {
                return Ok(Outcome::AccountPage {
                    session: self.account_page_open(&user_id),
                    query: query.clone(),
                });
            }
        };
        let token = self.sso.issue_login_token(&user_id)?;
        let (redirect_url, client_host) = continue_url(redirect_url, &token)?;
        Ok(Outcome::Continue {
            user_id,
            redirect_url,
            client_host,
        })
    }

    fn sso_new_signup(
        &self,
        provider: usize,
        identity: Identity,
        then: Then,
        browser: String,
    ) -> Result<Outcome, SsoError> {
        let base = identity
            .localpart
            .as_deref()
            .map(suggest_localpart)
            .filter(|s| !s.is_empty())
            .unwrap_or_default();
        // Offer the provider's name when it is free, else the first free variant.
        let mut error = None;
        let mut username = base.clone();
        if !base.is_empty() && self.check_username_available(&base).is_err() {
            error = Some(format!(
                "The username “{base}” is not available here. Choose another one."
            ));
            username = (2..100)
                .map(|n| format!("{base}{n}"))
                .find(|name| self.check_username_available(name).is_ok())
                .unwrap_or_default();
        }
        let signup = utils::random_string(32);
        let form = self
            .sso
            .signup_form(&signup, provider, &identity, username, error);
        let mut signups = utils::locked(&self.sso.signups);
        make_room(&mut signups, |s| s.expires_at);
        signups.insert(
            signup,
            Signup {
                link_failures: 0,
                provider,
                identity,
                then,
                browser,
                expires_at: Instant::now() + SIGNUP_LIFETIME,
            },
        );
        Ok(form)
    }

    /// Fetches the picture a provider names for a new account, stores it
    /// as the user's media and makes it their avatar. A picture that
    /// cannot be had is skipped (logged): the account is made either way.
    async fn import_sso_avatar(&self, user_id: &ruma::UserId, url: &str, provider_url: &str) {
        let fetched = async {
            // The same rule as for the provider itself: https, or http on
            // loopback.
            config::check_base_url(url, "the avatar").map_err(|e| e.to_string())?;
            // Profile pictures may be set by the people themselves: a host
            // other than the provider's must resolve to public addresses
            // only (the URL previews' IP rules), or an avatar could make this
            // server fetch from inside its network.
            let host_of = |u: &str| {
                url::Url::parse(u)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned))
            };
            if host_of(url) != host_of(provider_url) {
                let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
                let host = parsed.host_str().ok_or("no host")?.trim_matches(['[', ']']);
                let port = parsed.port_or_known_default().unwrap_or(443);
                let policy = self.config.ip_policy()?;
                let addresses: Vec<_> = tokio::net::lookup_host((host, port))
                    .await
                    .map_err(|e| e.to_string())?
                    .collect();
                if addresses.is_empty() || !addresses.iter().all(|a| policy.permits(a.ip())) {
                    return Err(format!("{host} is not a public address"));
                }
            }
            let http = self.sso.http.as_ref().ok_or("no HTTP client")?;
            let request = ::http::Request::get(url)
                .body(Vec::new())
                .map_err(|e| e.to_string())?;
            let response = http.send(request).await.map_err(|e| e.to_string())?;
            let kind = crate::media::essence(
                response
                    .headers()
                    .get(::http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            );
            if !response.status().is_success() || !kind.starts_with("image/") {
                return Err(format!("HTTP {} of type {kind:?}", response.status()));
            }
            let stored = self
                .media_files()
                .store_bytes(response.body())
                .await
                .map_err(|e| e.to_string())?;
            let uri = self
                .create_media(
                    user_id,
                    &stored,
                    crate::media::UploadInfo {
                        content_type: Some(&kind),
                        file_name: None,
                    },
                )
                .map_err(|e| e.to_string())?;
            self.users
                .set_profile_field(user_id, "avatar_url", Some(&serde_json::Value::String(uri)))
                .map_err(|e| e.to_string())
        };
        if let Err(e) = fetched.await {
            tracing::info!(%user_id, url, "the provider's avatar was not imported: {e}");
        }
    }

    /// The username form was sent: creates the account (or shows the form
    /// again saying what is wrong with the name).
    pub async fn sso_signup(
        &self,
        signup_id: &str,
        browser: Option<&str>,
        username: &str,
        import_display_name: bool,
    ) -> Result<Outcome, SsoError> {
        let (provider, identity, then) = self.sso.pending_signup(signup_id, browser)?;
        let config = &self.sso.providers[provider].config;
        let retry = |error: String| {
            Ok(self.sso.signup_form(
                signup_id,
                provider,
                &identity,
                username.to_owned(),
                Some(error),
            ))
        };
        let localpart = username.trim().to_lowercase();
        if localpart.is_empty() {
            return retry("Choose a username.".into());
        }
        if let Err(e) = self.check_username_available(&localpart) {
            return retry(SsoError::from(e).message);
        }
        let user_id = self.users.parse_new_localpart(&localpart)?;

        let _guard = self.sso.account_lock.lock().await;
        // Another tab may have finished this signup meanwhile.
        if let Some(existing) = self.sso_user(&config.id, &identity.subject)? {
            utils::locked(&self.sso.signups).remove(signup_id);
            return self.sso_continue(existing, &then);
        }
        let display_name = identity
            .display_name
            .as_deref()
            .filter(|_| import_display_name);
        let created = self.users.create(&user_id, None, false, |batch, _| {
            link_into(batch, &config.id, &identity.subject, &user_id)?;
            if let Some(name) = display_name {
                let name = serde_json::Value::String(name.to_owned());
                batch.put(&tables::PROFILES, (user_id.as_str(), "displayname"), &name)?;
            }
            Ok(())
        });
        if let Err(e) = created {
            // Taken between the check and now.
            return retry(SsoError::from(e).message);
        }
        utils::locked(&self.sso.signups).remove(signup_id);
        tracing::info!(%user_id, provider = %config.id, "registered a new account through single sign-on");
        if import_display_name && let Some(avatar) = identity.avatar_url.as_deref() {
            let provider_url = match &config.kind {
                config::ProviderKind::Oidc(oidc) => oidc.issuer.as_str(),
                config::ProviderKind::Mastodon(mastodon) => mastodon.instance.as_str(),
            };
            self.import_sso_avatar(&user_id, avatar, provider_url).await;
        }
        self.sso_continue(user_id, &then)
    }

    /// The username page's other form: the person already has an account
    /// here (made with a password) and links this identity to it.
    pub async fn sso_link(
        &self,
        signup_id: &str,
        browser: Option<&str>,
        username: &str,
        password: &str,
    ) -> Result<Outcome, SsoError> {
        if !self.config.sso.password_login_enabled() {
            return Err(SsoError::new(
                403,
                "Passwords are turned off on this server, so an account cannot be linked by its password.",
            ));
        }
        let (provider, identity, then) = self.sso.pending_signup(signup_id, browser)?;
        let config = &self.sso.providers[provider].config;
        let wrong = || {
            if !self.sso.count_link_failure(signup_id) {
                return Err(SsoError::new(
                    403,
                    "Too many wrong passwords: nothing was linked. Start again from your Matrix app.",
                ));
            }
            Ok(self.sso.signup_form(
                signup_id,
                provider,
                &identity,
                String::new(),
                Some("Wrong username or password: nothing was linked.".into()),
            ))
        };
        let Some(user_id) = self.users.resolve_login_name(username.trim()) else {
            return wrong();
        };
        if self.users.check_password(&user_id, password).await.is_err() {
            return wrong();
        }
        let _guard = self.sso.account_lock.lock().await;
        if let Some(existing) = self.sso_user(&config.id, &identity.subject)? {
            utils::locked(&self.sso.signups).remove(signup_id);
            return self.sso_continue(existing, &then);
        }
        let mut batch = self.db.batch();
        link_into(&mut batch, &config.id, &identity.subject, &user_id)?;
        self.db.write(batch).map_err(SsoError::internal)?;
        utils::locked(&self.sso.signups).remove(signup_id);
        tracing::info!(%user_id, provider = %config.id, "linked a single sign-on identity to an account");
        self.sso_continue(user_id, &then)
    }
}

/// Stores that `subject` at `provider` signs in `user_id`, both ways.
fn link_into(
    batch: &mut conduit_storage::Batch<'_>,
    provider: &str,
    subject: &str,
    user_id: &UserId,
) -> crate::Result<()> {
    batch.put(
        &tables::SSO_IDENTITIES,
        (provider, subject),
        user_id.as_str(),
    )?;
    batch.put(
        &tables::USER_SSO_IDENTITIES,
        (user_id.as_str(), provider, subject),
        &true,
    )?;
    Ok(())
}

/// Wrong passwords a signup may give before it is dropped.
const MAX_LINK_FAILURES: u8 = 3;

impl Sso {
    /// The username page of a signup, with `username` in its field.
    fn signup_form(
        &self,
        signup: &str,
        provider: usize,
        identity: &Identity,
        username: String,
        error: Option<String>,
    ) -> Outcome {
        Outcome::ChooseUsername(SignupForm {
            signup: signup.to_owned(),
            provider_name: self.providers[provider].config.name.clone(),
            username,
            display_name: identity.display_name.clone(),
            error,
        })
    }

    /// Counts a wrong password on a signup; `false` (and the signup gone)
    /// once there were too many.
    fn count_link_failure(&self, id: &str) -> bool {
        let mut signups = utils::locked(&self.signups);
        let Some(signup) = signups.get_mut(id) else {
            return false;
        };
        signup.link_failures += 1;
        if signup.link_failures >= MAX_LINK_FAILURES {
            signups.remove(id);
            return false;
        }
        true
    }

    /// A signup still waiting for its form, from the browser that started it.
    fn pending_signup(
        &self,
        id: &str,
        browser: Option<&str>,
    ) -> Result<(usize, Identity, Then), SsoError> {
        let signups = utils::locked(&self.signups);
        let signup = signups
            .get(id)
            .filter(|s| s.expires_at > Instant::now())
            .ok_or_else(SsoError::expired)?;
        if browser != Some(signup.browser.as_str()) {
            return Err(SsoError::expired());
        }
        Ok((
            signup.provider,
            signup.identity.clone(),
            signup.then.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_url_replaces_login_token() {
        let (url, host) = continue_url("https://app.example/#/?loginToken=old&x=1", "new").unwrap();
        assert_eq!(
            url,
            "https://app.example/?loginToken=new#/?loginToken=old&x=1"
        );
        assert_eq!(host, "app.example");
        let (url, host) = continue_url("http://127.0.0.1:8080/cb?loginToken=a&b=c", "t").unwrap();
        assert_eq!(url, "http://127.0.0.1:8080/cb?b=c&loginToken=t");
        assert_eq!(host, "http://127.0.0.1:8080/cb");
        // The app's own query is kept as it was written.
        let (url, _) = continue_url("https://a.example/?flag&sig=a%20b+c", "t").unwrap();
        assert_eq!(url, "https://a.example/?flag&sig=a%20b+c&loginToken=t");
        let (url, host) =
            continue_url("element://vector/webapp/?element-desktop-ssoid=abc", "t").unwrap();
        assert_eq!(
            url,
            "element://vector/webapp/?element-desktop-ssoid=abc&loginToken=t"
        );
        assert_eq!(host, "element://vector/webapp/");
    }

    #[test]
    fn redirect_urls_refuse_browser_schemes() {
        assert!(check_redirect_url("https://app.element.io/").is_ok());
        assert!(check_redirect_url("javascript:alert(1)").is_err());
        assert!(
            check_redirect_url("JavaScript:alert(1)").is_err(),
            "schemes are lower-cased"
        );
        assert!(check_redirect_url("data:text/html,x").is_err());
        assert!(check_redirect_url("file:///etc/passwd").is_err());
        assert!(check_redirect_url("https://").is_err());
        assert!(check_redirect_url("http:").is_err());
        assert!(check_redirect_url("element://vector/webapp/").is_ok());
        assert!(check_redirect_url("im.fluffychat://login").is_ok());
        assert!(check_redirect_url("/relative").is_err());
        assert!(check_redirect_url(&format!("https://x.example/{}", "a".repeat(3000))).is_err());
    }

    #[test]
    fn suggestions_are_valid_localparts() {
        assert_eq!(suggest_localpart("Alice Smith"), "alice_smith");
        assert_eq!(suggest_localpart("bob.b-1"), "bob.b-1");
        assert_eq!(suggest_localpart("Zoë"), "zo_");
    }
}
