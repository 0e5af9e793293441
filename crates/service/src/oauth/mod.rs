//! The Matrix OAuth 2.0 API (Matrix 1.15, "next-generation auth"), built
//! in: server metadata, dynamic client registration ([`client`]), the
//! authorization code grant with PKCE S256, refresh with rotation and
//! revocation (RFC 7009). Tokens are the same device tokens `/login`
//! hands out, so every endpoint takes them; a grant's device comes from its
//! scope ([`scope`]).
//!
//! An *authorization* is a client's request waiting for a person to sign
//! in on our pages (password, sign-up, or an upstream SSO provider); it is
//! kept in memory for [`AUTHORIZATION_LIFETIME`]. Signing in turns it into
//! a *code*, single use, living [`CODE_LIFETIME`]; a code used twice
//! revokes what it gave (RFC 6749 §4.1.2). A restart forgets both: people
//! start again. Clients are stored (`oauth_clients`).

pub mod client;
pub mod scope;

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use base64::Engine;
use ruma::{OwnedDeviceId, OwnedUserId, UserId};
use serde_json::{Value as JsonValue, json};
use sha2::Digest;

use self::{client::ClientRecord, scope::Scope};
use crate::{Services, sso::make_room, tables, users::devices::SessionRequest, utils};

/// Where the pages and endpoints live, under the client base URL.
pub const AUTHORIZE_PATH: &str = "/_conduit/oauth/authorize";
pub const TOKEN_PATH: &str = "/_conduit/oauth/token";
pub const REGISTRATION_PATH: &str = "/_conduit/oauth/register";
pub const REVOCATION_PATH: &str = "/_conduit/oauth/revoke";

/// Time to sign in (or sign up) on our pages, an SSO detour included.
const AUTHORIZATION_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Time for the client to exchange a code (RFC 6749 advises at most 10 minutes).
const CODE_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Wrong passwords one authorization may take.
const MAX_PASSWORD_FAILURES: u8 = 5;
/// Longest `state` passed through.
const MAX_STATE: usize = 1024;

/// An OAuth error (RFC 6749 §5.2, RFC 7591 §3.2.2): the `error` code, a
/// description, and the status it is sent with.
#[derive(Debug, Clone)]
pub struct OAuthError {
    pub error: &'static str,
    pub description: String,
    pub status: u16,
}

impl OAuthError {
    pub fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            error,
            description: description.into(),
            status: if error == "invalid_client" { 401 } else { 400 },
        }
    }

    fn grant(description: impl Into<String>) -> Self {
        Self::new("invalid_grant", description)
    }

    fn server(detail: impl std::fmt::Display) -> Self {
        tracing::error!("OAuth request failed: {detail}");
        Self {
            error: "server_error",
            description: "Something went wrong on this server.".into(),
            status: 500,
        }
    }

    pub fn to_json(&self) -> JsonValue {
        json!({"error": self.error, "error_description": self.description})
    }
}

impl From<crate::Error> for OAuthError {
    fn from(e: crate::Error) -> Self {
        Self::server(e)
    }
}

impl From<conduit_storage::Error> for OAuthError {
    fn from(e: conduit_storage::Error) -> Self {
        Self::server(e)
    }
}

/// How the client wants the code back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseMode {
    Query,
    Fragment,
}

/// The parameters of an authorization request, as the browser brought them.
#[derive(Default)]
pub struct AuthorizeParams<'a> {
    pub response_type: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub redirect_uri: Option<&'a str>,
    pub scope: Option<&'a str>,
    pub state: Option<&'a str>,
    pub response_mode: Option<&'a str>,
    pub code_challenge: Option<&'a str>,
    pub code_challenge_method: Option<&'a str>,
    pub prompt: Option<&'a str>,
    /// MSC4198: `mxid:@user:server`, to fill in the login form.
    pub login_hint: Option<&'a str>,
}

/// Why an authorization request cannot go on.
#[derive(Debug)]
pub enum Refusal {
    /// The client or its redirect URI is unknown: told to the person on a
    /// page, never sent anywhere (RFC 6749 §4.1.2.1).
    Page(String),
    /// Anything else goes back to the client, at this address; before the
    /// person did anything here, by a link they follow (an automatic
    /// redirect would make this server an open redirector for anyone who
    /// registers a client).
    Redirect { url: String, description: String },
}

/// A client's request waiting for a person to sign in.
#[derive(Clone, Debug)]
struct Authorization {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    mode: ResponseMode,
    code_challenge: String,
    scope: Scope,
    password_failures: u8,
    /// The browser the request was opened in (a cookie): only there may
    /// someone sign in for it, so a link to our sign-in steps (an SSO
    /// provider that signs in silently) cannot skip the page naming the app.
    browser: String,
    expires_at: Instant,
}

/// What the sign-in pages show about a waiting authorization.
pub struct AuthorizationView {
    pub id: String,
    pub client_name: String,
    /// The client's site, for the person to judge who asks.
    pub client_uri: String,
    /// Where the browser goes back to (pages let their forms lead there).
    pub redirect_uri: String,
    pub tos_uri: Option<String>,
    pub policy_uri: Option<String>,
    /// `prompt=create`: the person wants a new account.
    pub create: bool,
    /// A localpart to fill in, from `login_hint`.
    pub username_hint: Option<String>,
    /// The browser cookie value the request is bound to.
    pub browser: String,
}

impl AuthorizationView {
    fn of(
        id: String,
        client: ClientRecord,
        redirect_uri: String,
        browser: String,
        create: bool,
    ) -> Self {
        Self {
            id,
            client_name: client.display_name(),
            client_uri: client.client_uri,
            redirect_uri,
            tos_uri: client.tos_uri,
            policy_uri: client.policy_uri,
            create,
            username_hint: None,
            browser,
        }
    }
}

struct Code {
    authorization: Authorization,
    user_id: OwnedUserId,
    expires_at: Instant,
    /// The device the code was exchanged for: a second exchange revokes it.
    used_for: Option<OwnedDeviceId>,
}

/// Authorizations and codes in progress.
#[derive(Default)]
pub struct OAuth {
    authorizations: Mutex<HashMap<String, Authorization>>,
    codes: Mutex<HashMap<String, Code>>,
}

/// `base64url(SHA-256(verifier))`, PKCE's S256 (RFC 7636 §4.2).
fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

/// A PKCE verifier or challenge: 43 to 128 unreserved characters.
fn pkce_shaped(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// `uri` with `params` added to its query or put in its fragment.
fn redirect_with(uri: &str, mode: ResponseMode, params: &[(&str, &str)]) -> String {
    let Ok(mut url) = url::Url::parse(uri) else {
        return uri.to_owned();
    };
    match mode {
        ResponseMode::Query => {
            url.query_pairs_mut().extend_pairs(params);
        }
        ResponseMode::Fragment => {
            let fragment = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params)
                .finish();
            url.set_fragment(Some(&fragment));
        }
    }
    url.into()
}

impl Authorization {
    /// Where the browser goes with an error for the client.
    fn error_redirect(&self, error: &str, description: &str) -> String {
        let mut params = vec![("error", error), ("error_description", description)];
        if let Some(state) = &self.state {
            params.push(("state", state));
        }
        redirect_with(&self.redirect_uri, self.mode, &params)
    }
}

/// The localpart a `login_hint` names, when it is one of ours.
fn hinted_localpart(hint: &str, server_name: &str) -> Option<String> {
    let user = hint.strip_prefix("mxid:")?;
    let user_id = UserId::parse(user).ok()?;
    (user_id.server_name().as_str() == server_name).then(|| user_id.localpart().to_owned())
}

impl Services {
    fn oauth_url(&self, path: &str) -> String {
        format!(
            "{}{path}",
            self.config.client_base_url().trim_end_matches('/')
        )
    }

    /// `GET /auth_metadata`: RFC 8414 server metadata, as the spec asks.
    pub fn oauth_metadata(&self) -> JsonValue {
        let mut metadata = json!({
            "issuer": format!("{}/", self.config.client_base_url().trim_end_matches('/')),
            "authorization_endpoint": self.oauth_url(AUTHORIZE_PATH),
            "token_endpoint": self.oauth_url(TOKEN_PATH),
            "registration_endpoint": self.oauth_url(REGISTRATION_PATH),
            "revocation_endpoint": self.oauth_url(REVOCATION_PATH),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query", "fragment"],
            "grant_types_supported": client::GRANT_TYPES,
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": ["urn:matrix:client:api:*", "urn:matrix:client:device:*"],
            "account_management_uri": self.oauth_url(crate::account_page::ACCOUNT_PATH),
            // The Matrix 1.18 names, and the MSC4191 ones clients still send.
            "account_management_actions_supported": [
                "org.matrix.devices_list", "org.matrix.device_view", "org.matrix.device_delete",
                "org.matrix.sessions_list", "org.matrix.session_view", "org.matrix.session_end",
            ],
        });
        if self.registration_flows().is_ok() {
            metadata["prompt_values_supported"] = json!(["create"]);
        }
        metadata
    }

    /// `POST /register` (RFC 7591): stores a client; its answer.
    pub fn oauth_register_client(&self, body: &JsonValue) -> Result<JsonValue, OAuthError> {
        let record = client::check_metadata(body, utils::now_ms() / 1000)?;
        let client_id = utils::random_string(24);
        let mut batch = self.db.batch();
        batch.put(&tables::OAUTH_CLIENTS, client_id.as_str(), &record)?;
        self.db.write(batch)?;
        tracing::info!(%client_id, client_uri = %record.client_uri, "registered an OAuth client");
        Ok(record.to_json(&client_id))
    }

    fn oauth_client(&self, client_id: &str) -> Result<Option<ClientRecord>, OAuthError> {
        Ok(self.db.get(&tables::OAUTH_CLIENTS, client_id)?)
    }

    /// `GET /authorize`: checks the request and keeps it until the person
    /// signs in; what the page shows.
    pub fn oauth_authorize(
        &self,
        params: &AuthorizeParams<'_>,
        browser: Option<&str>,
    ) -> Result<AuthorizationView, Refusal> {
        let client_id = params
            .client_id
            .ok_or_else(|| Refusal::Page("The app did not say who it is (client_id).".into()))?;
        let client = self
            .oauth_client(client_id)
            .map_err(|e| Refusal::Page(e.description))?
            .ok_or_else(|| {
                Refusal::Page("The app that sent you here is not registered on this server.".into())
            })?;
        let redirect_uri = params
            .redirect_uri
            .filter(|uri| client.redirect_matches(uri))
            .ok_or_else(|| {
                Refusal::Page(
                    "The app that sent you here gave a return address it did not register \
                     (redirect_uri)."
                        .into(),
                )
            })?;
        let mut pending = Authorization {
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            state: params.state.map(str::to_owned),
            mode: ResponseMode::Query,
            code_challenge: String::new(),
            scope: Scope {
                device_id: String::new(),
                granted: String::new(),
            },
            password_failures: 0,
            browser: crate::sso::browser_value(browser),
            expires_at: Instant::now() + AUTHORIZATION_LIFETIME,
        };
        // From here on, errors go back to the app.
        let refuse = |pending: &Authorization, error: &str, description: &str| Refusal::Redirect {
            url: pending.error_redirect(error, description),
            description: description.to_owned(),
        };
        if params.state.is_some_and(|s| s.len() > MAX_STATE) {
            pending.state = None;
            return Err(refuse(&pending, "invalid_request", "state is too long"));
        }
        pending.mode = match params.response_mode {
            None | Some("query") => ResponseMode::Query,
            Some("fragment") => ResponseMode::Fragment,
            Some(_) => {
                return Err(refuse(
                    &pending,
                    "invalid_request",
                    "response_mode must be query or fragment",
                ));
            }
        };
        if params.response_type != Some("code") {
            return Err(refuse(
                &pending,
                "unsupported_response_type",
                "only response_type=code is supported",
            ));
        }
        if params.code_challenge_method != Some("S256") {
            return Err(refuse(
                &pending,
                "invalid_request",
                "PKCE is required: code_challenge_method=S256",
            ));
        }
        pending.code_challenge = params
            .code_challenge
            .filter(|c| pkce_shaped(c))
            .ok_or_else(|| {
                refuse(
                    &pending,
                    "invalid_request",
                    "code_challenge is missing or malformed",
                )
            })?
            .to_owned();
        pending.scope = scope::parse(params.scope.unwrap_or_default())
            .map_err(|e| refuse(&pending, e.error, &e.description))?;
        let create = params
            .prompt
            .is_some_and(|p| p.split(' ').any(|v| v == "create"));
        let id = utils::random_string(32);
        let browser = pending.browser.clone();
        {
            let mut authorizations = utils::locked(&self.oauth.authorizations);
            make_room(&mut authorizations, |a| a.expires_at);
            authorizations.insert(id.clone(), pending);
        }
        let mut view = AuthorizationView::of(id, client, redirect_uri.to_owned(), browser, create);
        view.username_hint = params
            .login_hint
            .and_then(|h| hinted_localpart(h, self.config.server_name.as_str()));
        Ok(view)
    }

    /// A waiting authorization, as its page shows it.
    pub fn oauth_authorization_view(
        &self,
        id: &str,
        create: bool,
        browser: Option<&str>,
    ) -> Option<AuthorizationView> {
        let pending = self.oauth_pending(id, browser)?;
        let client = self.oauth_client(&pending.client_id).ok()??;
        Some(AuthorizationView::of(
            id.to_owned(),
            client,
            pending.redirect_uri,
            pending.browser,
            create,
        ))
    }

    /// A waiting authorization, asked for from the browser it is bound to.
    fn oauth_pending(&self, id: &str, browser: Option<&str>) -> Option<Authorization> {
        utils::locked(&self.oauth.authorizations)
            .get(id)
            .filter(|a| a.expires_at > Instant::now() && browser == Some(a.browser.as_str()))
            .cloned()
    }

    /// Whether authorization `id` is still waiting for this browser (an
    /// SSO detour checks before it leaves).
    pub fn oauth_is_pending(&self, id: &str, browser: Option<&str>) -> bool {
        self.oauth_pending(id, browser).is_some()
    }

    /// The person signed in as `user_id`: the authorization becomes a code,
    /// and the browser goes back to the client with it.
    pub fn oauth_signed_in(&self, id: &str, user_id: &UserId) -> Result<String, crate::Error> {
        let pending = utils::locked(&self.oauth.authorizations)
            .remove(id)
            .filter(|a| a.expires_at > Instant::now())
            .ok_or_else(|| {
                crate::Error::forbidden(
                    "This sign-in request is unknown or has expired. Start again from your app.",
                )
            })?;
        if self.users.account(user_id)?.is_none_or(|a| a.deactivated) {
            return Err(crate::Error::forbidden(
                "This account has been deactivated.",
            ));
        }
        let code = utils::random_string(32);
        let mut params = vec![("code", code.as_str())];
        if let Some(state) = &pending.state {
            params.push(("state", state));
        }
        let url = redirect_with(&pending.redirect_uri, pending.mode, &params);
        let mut codes = utils::locked(&self.oauth.codes);
        make_room(&mut codes, |c| c.expires_at);
        codes.insert(
            code,
            Code {
                authorization: pending,
                user_id: user_id.to_owned(),
                expires_at: Instant::now() + CODE_LIFETIME,
                used_for: None,
            },
        );
        tracing::info!(%user_id, "signed in for an OAuth client");
        Ok(url)
    }

    /// Drops the codes not yet exchanged of a user whose password changed,
    /// who logged out everywhere or was deactivated.
    pub(crate) fn oauth_forget_codes(&self, user_id: &UserId) {
        utils::locked(&self.oauth.codes).retain(|_, c| c.user_id != user_id);
        self.account_page_forget(user_id);
    }

    /// The password form: the code's redirect, or why not (a wrong
    /// password counts; after a few the authorization is dropped).
    pub async fn oauth_password_login(
        &self,
        id: &str,
        browser: Option<&str>,
        username: &str,
        password: &str,
    ) -> Result<String, crate::Error> {
        if !self.config.sso.password_login_enabled() {
            return Err(crate::Error::forbidden(
                "Password login is turned off on this server.",
            ));
        }
        if self.oauth_pending(id, browser).is_none() {
            return Err(crate::Error::forbidden(
                "This sign-in request is unknown or has expired. Start again from your app.",
            ));
        }
        let user_id = self.users.resolve_login_name(username.trim());
        // Under the user's lock, as `/login`: a password change that lands
        // meanwhile comes first (and this check fails) or after (and drops
        // the code).
        let lock = match &user_id {
            Some(user_id) => Some(self.user_locks.lock(user_id).await),
            None => None,
        };
        let checked = match &user_id {
            Some(user_id) => self.users.check_password(user_id, password).await,
            None => Err(crate::Error::forbidden("Invalid username or password.")),
        };
        match (checked, user_id) {
            (Ok(()), Some(user_id)) => self.oauth_signed_in(id, &user_id),
            _ => {
                drop(lock);
                let mut authorizations = utils::locked(&self.oauth.authorizations);
                if let Some(pending) = authorizations.get_mut(id) {
                    pending.password_failures += 1;
                    if pending.password_failures >= MAX_PASSWORD_FAILURES {
                        authorizations.remove(id);
                        return Err(crate::Error::forbidden(
                            "Too many wrong passwords. Start again from your app.",
                        ));
                    }
                }
                Err(crate::Error::forbidden("Wrong username or password."))
            }
        }
    }

    /// The sign-up form (`prompt=create`): a new password account, with
    /// the registration token or invite link the server may need.
    pub async fn oauth_sign_up(
        &self,
        id: &str,
        browser: Option<&str>,
        username: &str,
        password: &str,
        token: &str,
    ) -> Result<String, crate::Error> {
        if self.oauth_pending(id, browser).is_none() {
            return Err(crate::Error::forbidden(
                "This sign-in request is unknown or has expired. Start again from your app.",
            ));
        }
        // An invite link works as well as its token.
        let token = token.trim();
        let token = token
            .rsplit_once(&format!("{}/", crate::invites::INVITE_PATH))
            .map_or(token, |(_, t)| t.trim_end_matches('/'));
        let user_id = self
            .register_from_page(Some(token), username, password)
            .await?;
        tracing::info!(%user_id, "the account came from the OAuth sign-up page");
        self.oauth_signed_in(id, &user_id)
    }

    /// `POST /token`: the form's grant, answered as RFC 6749 §5.1 says.
    pub async fn oauth_token(
        &self,
        form: &HashMap<String, String>,
    ) -> Result<JsonValue, OAuthError> {
        let field = |key: &str| {
            form.get(key)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| OAuthError::new("invalid_request", format!("{key} is missing")))
        };
        let client_id = field("client_id")?;
        let client = self
            .oauth_client(client_id)?
            .ok_or_else(|| OAuthError::new("invalid_client", "unknown client_id"))?;
        let grant_type = field("grant_type")?;
        if !client.grant_types.iter().any(|g| g == grant_type) {
            return Err(if client::GRANT_TYPES.contains(&grant_type) {
                OAuthError::new(
                    "unauthorized_client",
                    format!("the client did not register for {grant_type}"),
                )
            } else {
                OAuthError::new(
                    "unsupported_grant_type",
                    format!("{grant_type} is not supported"),
                )
            });
        }
        let (session, scope) = match grant_type {
            "authorization_code" => {
                self.oauth_exchange_code(
                    client_id,
                    &client,
                    field("code")?,
                    field("redirect_uri")?,
                    field("code_verifier")?,
                )
                .await?
            }
            _ => {
                self.oauth_refresh(client_id, field("refresh_token")?)
                    .await?
            }
        };
        Ok(json!({
            "access_token": session.access_token,
            "token_type": "Bearer",
            "expires_in": session.expires_in_ms.unwrap_or_default() / 1000,
            "refresh_token": session.refresh_token,
            "scope": scope,
        }))
    }

    async fn oauth_exchange_code(
        &self,
        client_id: &str,
        client: &ClientRecord,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<(crate::users::NewSession, String), OAuthError> {
        // The whole exchange runs under the user's lock, so a replay (which
        // revokes under the same lock) always comes after the session it
        // revokes exists.
        let owner = utils::locked(&self.oauth.codes)
            .get(code)
            .map(|c| c.user_id.clone())
            .ok_or_else(|| OAuthError::grant("the code is unknown or has expired"))?;
        let lock = self.user_locks.lock(&owner).await;
        let (pending, user_id) = match self.oauth_take_code(client_id, code, redirect_uri, verifier)
        {
            Ok(taken) => taken,
            Err((error, None)) => return Err(error),
            Err((error, Some((user_id, device)))) => {
                // A replayed code: someone else may hold it. What it gave goes.
                drop(lock);
                tracing::warn!(%user_id, %device, "an OAuth code was used twice: its session is revoked");
                self.delete_devices(&user_id, &[device]).await?;
                return Err(error);
            }
        };
        if self.users.account(&user_id)?.is_none_or(|a| a.deactivated) {
            return Err(OAuthError::grant("the account has been deactivated"));
        }
        let device_id: OwnedDeviceId = pending.scope.device_id.as_str().into();
        let name = client.display_name();
        let created = self.devices.create_session(SessionRequest {
            user_id: &user_id,
            device_id: Some(&device_id),
            display_name: Some(&name),
            with_refresh_token: true,
            is_guest: false,
            client_ip: None,
            oauth_client: Some(client_id),
        });
        let session = match created {
            Ok(session) => session,
            Err(e) => {
                // Nothing was given: the client's retry is not a replay.
                if let Some(entry) = utils::locked(&self.oauth.codes).get_mut(code) {
                    entry.used_for = None;
                }
                return Err(e.into());
            }
        };
        drop(lock);
        tracing::info!(%user_id, %device_id, client_id, "logged in through OAuth");
        Ok((session, pending.scope.granted))
    }

    /// Spends a code: the authorization and user it was issued for. A code
    /// already spent names the session it gave, to be revoked.
    #[allow(clippy::type_complexity)]
    fn oauth_take_code(
        &self,
        client_id: &str,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<(Authorization, OwnedUserId), (OAuthError, Option<(OwnedUserId, OwnedDeviceId)>)>
    {
        let mut codes = utils::locked(&self.oauth.codes);
        let entry = codes
            .get_mut(code)
            .filter(|c| c.expires_at > Instant::now())
            .ok_or_else(|| {
                (
                    OAuthError::grant("the code is unknown or has expired"),
                    None,
                )
            })?;
        let pending = &entry.authorization;
        if pending.client_id != client_id {
            return Err((
                OAuthError::grant("the code was issued to another client"),
                None,
            ));
        }
        if pending.redirect_uri != redirect_uri {
            return Err((
                OAuthError::grant("redirect_uri differs from the authorization request's"),
                None,
            ));
        }
        if !pkce_shaped(verifier) || s256(verifier) != pending.code_challenge {
            // A wrong verifier spends the code: it cannot be guessed at.
            codes.remove(code);
            return Err((
                OAuthError::grant("code_verifier does not match the code_challenge"),
                None,
            ));
        }
        // A replay, by whoever holds both the code and its verifier.
        if let Some(device) = entry.used_for.clone() {
            let user_id = entry.user_id.clone();
            codes.remove(code);
            return Err((
                OAuthError::grant("the code was already used"),
                Some((user_id, device)),
            ));
        }
        entry.used_for = Some(pending.scope.device_id.as_str().into());
        Ok((pending.clone(), entry.user_id.clone()))
    }

    async fn oauth_refresh(
        &self,
        client_id: &str,
        refresh_token: &str,
    ) -> Result<(crate::users::NewSession, String), OAuthError> {
        let invalid = || OAuthError::grant("the refresh token is unknown or was revoked");
        let Some(token) = self.db.get(&tables::REFRESH_TOKENS, refresh_token)? else {
            return Err(invalid());
        };
        let device = self
            .devices
            .get(&token.user_id, &token.device_id)?
            .ok_or_else(invalid)?;
        if device.oauth_client.as_deref() != Some(client_id) {
            return Err(OAuthError::grant(
                "the refresh token was issued to another client",
            ));
        }
        let session = self.refresh(refresh_token).await.map_err(|e| match e {
            crate::Error::Matrix { .. } if e.status() < 500 => invalid(),
            other => OAuthError::server(other),
        })?;
        let scope = format!(
            "urn:matrix:client:api:* urn:matrix:client:device:{}",
            token.device_id
        );
        Ok((session, scope))
    }

    /// `POST /revoke` (RFC 7009): the session of an access or refresh
    /// token ends, both tokens and the device with it, as `/logout` does.
    /// Unknown tokens are fine: the outcome is the same.
    pub async fn oauth_revoke(&self, token: &str) -> Result<(), OAuthError> {
        let record = match self.db.get(&tables::ACCESS_TOKENS, token)? {
            Some(record) => Some(record),
            None => self.db.get(&tables::REFRESH_TOKENS, token)?,
        };
        if let Some(record) = record {
            self.delete_devices(&record.user_id, &[&record.device_id])
                .await?;
            tracing::info!(user_id = %record.user_id, device_id = %record.device_id, "an OAuth session was revoked");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636() {
        // RFC 7636, appendix B.
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(pkce_shaped("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
        assert!(!pkce_shaped("short"));
        assert!(!pkce_shaped(&"a+".repeat(30)));
    }

    #[test]
    fn redirects_keep_the_clients_query() {
        let url = redirect_with(
            "https://app.example/cb?x=1",
            ResponseMode::Query,
            &[("code", "abc"), ("state", "s t")],
        );
        assert_eq!(url, "https://app.example/cb?x=1&code=abc&state=s+t");
        let url = redirect_with(
            "com.example.app:/cb",
            ResponseMode::Fragment,
            &[("code", "abc")],
        );
        assert_eq!(url, "com.example.app:/cb#code=abc");
    }

    #[test]
    fn login_hints() {
        assert_eq!(
            hinted_localpart("mxid:@alice:example.org", "example.org").as_deref(),
            Some("alice")
        );
        assert_eq!(
            hinted_localpart("mxid:@alice:other.org", "example.org"),
            None
        );
        assert_eq!(hinted_localpart("alice", "example.org"), None);
    }
}
