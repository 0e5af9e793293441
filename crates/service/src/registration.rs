//! Account registration (`POST /register`): which flows are offered, the
//! registration-token stage, and account creation at the end of the flow.

use conduit_storage::Batch;
use ruma::{
    DeviceId, OwnedUserId, UserId,
    api::client::uiaa::{AuthData, AuthFlow, AuthType},
};
use serde_json::Value as JsonValue;

use crate::{
    Error, ErrorCode, Result, Services,
    registration_tokens::{NewToken, TokenView},
    uiaa::UiaaRequest,
    users::{NewSession, devices::SessionRequest, password},
    utils,
};

/// How long the first-start admin invite stays valid.
const FIRST_ADMIN_INVITE_LIFETIME_MS: u64 = 24 * 60 * 60 * 1000;

/// A registration request, as parsed from the client.
pub struct Registration<'a> {
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub device_id: Option<&'a DeviceId>,
    pub display_name: Option<&'a str>,
    pub inhibit_login: bool,
    pub refresh_token: bool,
    pub guest: bool,
    pub auth: Option<&'a AuthData>,
    /// The raw body, kept by the auth session for later steps.
    pub body: Option<&'a JsonValue>,
    pub client_ip: Option<&'a str>,
}

pub struct Registered {
    pub user_id: OwnedUserId,
    /// `None` with `inhibit_login`.
    pub session: Option<NewSession>,
}

/// The new account's first device, as the registration asked for it.
fn first_session<'a>(
    request: &'a Registration<'a>,
    user_id: &'a ruma::UserId,
    is_guest: bool,
) -> SessionRequest<'a> {
    SessionRequest {
        user_id,
        device_id: request.device_id,
        display_name: request.display_name,
        with_refresh_token: request.refresh_token,
        is_guest,
        client_ip: request.client_ip,
        oauth_client: None,
    }
}

impl Services {
    /// Whether password accounts may be registered at all (by `/register`
    /// or an invite page).
    pub(crate) fn registration_open(&self) -> Result<()> {
        if !self.config.allow_registration {
            return Err(Error::forbidden("Registration is disabled on this server."));
        }
        // With password login off, a password account could never log in again.
        if !self.config.sso.password_login_enabled() {
            return Err(Error::forbidden(
                "Accounts on this server are created through single sign-on only.",
            ));
        }
        Ok(())
    }

    /// The flows `/register` offers, or why registration is closed.
    pub fn registration_flows(&self) -> Result<Vec<AuthFlow>> {
        self.registration_open()?;
        let config = &self.config;
        if !config.registration_requires_token {
            return Ok(vec![AuthFlow::new(vec![AuthType::Dummy])]);
        }
        if config.registration_token.is_none() && !self.registration_tokens.any_usable()? {
            return Err(Error::forbidden(
                "Registration needs a registration token, and this server has none to give.",
            ));
        }
        Ok(vec![AuthFlow::new(vec![AuthType::RegistrationToken])])
    }

    /// On a first start (no account yet) of a server where registration
    /// needs a token: a single-use token valid for 24 hours whose account
    /// becomes a server admin (the one still valid from an earlier start,
    /// if any). `None` once accounts exist or when registration is open.
    pub fn first_admin_invite(&self) -> Result<Option<TokenView>> {
        let config = &self.config;
        if self.registration_open().is_err()
            || !config.registration_requires_token
            || self.users.any()?
        {
            return Ok(None);
        }
        let now = utils::now_ms();
        if let Some(existing) = self
            .registration_tokens
            .list()?
            .into_iter()
            .find(|t| t.record.grants_admin && t.is_valid(now))
        {
            return Ok(Some(existing));
        }
        self.registration_tokens
            .create(NewToken {
                uses_allowed: Some(1),
                expiry_time: Some(now + FIRST_ADMIN_INVITE_LIFETIME_MS),
                note: Some("first start: the first account, a server admin".into()),
                grants_admin: true,
                ..NewToken::default()
            })
            .map(Some)
    }

    /// True when `token` is the static `registration_token` of the config
    /// (unlimited uses). Compared in constant time.
    pub fn is_static_registration_token(&self, token: &str) -> bool {
        let Some(expected) = &self.config.registration_token else {
            return false;
        };
        let (a, b) = (expected.as_bytes(), token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// `GET /register/available`: free and valid, or the error saying why not.
    pub fn check_username_available(&self, localpart: &str) -> Result<()> {
        let user_id = self.users.parse_new_localpart(localpart)?;
        // The bot's name is taken even before the bot exists.
        if self.users.exists(&user_id)? || user_id.localpart() == crate::admin_room::BOT_LOCALPART {
            return Err(Error::new(
                ErrorCode::UserInUse,
                "The desired user ID is already taken.",
            ));
        }
        self.check_user_namespace(&user_id, None)
    }

    pub async fn register(&self, request: Registration<'_>) -> Result<Registered> {
        if request.guest {
            return self.register_guest(&request).await;
        }
        let flows = self.registration_flows()?;
        // Say what is wrong with the name before asking for any auth stage.
        if let Some(username) = request.username {
            self.check_username_available(username)?;
        }
        let passed = self
            .user_interactive_auth(UiaaRequest {
                user_id: None,
                flows,
                auth: request.auth,
                body: request.body,
                purpose: "create an account",
            })
            .await?;

        // Later steps of the flow may leave out what the first one said.
        let first = |key: &str| passed.first_body.get(key).and_then(JsonValue::as_str);
        let password = request
            .password
            .or_else(|| first("password"))
            .ok_or_else(|| Error::new(ErrorCode::MissingParam, "A password is required."))?;
        let user_id = match request.username.or_else(|| first("username")) {
            Some(name) => {
                self.check_username_available(&name.to_lowercase())?;
                self.users.parse_new_localpart(&name.to_lowercase())?
            }
            None => self.free_random_user_id()?,
        };
        let session = self
            .create_account(&user_id, password, passed.session_id(), |batch| {
                if request.inhibit_login {
                    return Ok(None);
                }
                let session = self
                    .devices
                    .create_session_into(batch, first_session(&request, &user_id, false))?;
                Ok(Some(session))
            })
            .await?;
        self.uiaa.finish(passed);
        Ok(Registered { user_id, session })
    }

    /// Creates a password account: the account, whatever `with` adds (the
    /// first device) and the registration-token use `session` reserved
    /// land in one batch. A token that grants admin makes the account a
    /// server admin in the admin room. Both `/register` and the invite
    /// page's form end here.
    pub(crate) async fn create_account<T>(
        &self,
        user_id: &UserId,
        password: &str,
        session: &str,
        with: impl FnOnce(&mut Batch<'_>) -> Result<T>,
    ) -> Result<T> {
        let hash = password::hash(password.to_owned()).await?;
        let mut made_admin = false;
        let result = self
            .registration_tokens
            .complete(session, |count_token_use| {
                self.users
                    .create(user_id, Some(hash), false, |batch, account| {
                        account.is_admin = count_token_use(batch)?;
                        made_admin = account.is_admin;
                        with(batch)
                    })
            })?;
        tracing::info!(%user_id, admin = made_admin, "registered a new account");
        if made_admin {
            self.welcome_admin(user_id).await;
        }
        Ok(result)
    }

    async fn register_guest(&self, request: &Registration<'_>) -> Result<Registered> {
        if !self.config.allow_guest_registration {
            return Err(Error::new(
                ErrorCode::GuestAccessForbidden,
                "Guest access is disabled on this server.",
            ));
        }
        // Guests get numeric ids, which normal registration refuses.
        let user_id = loop {
            let localpart: String = utils::random_string(64)
                .bytes()
                .filter(u8::is_ascii_digit)
                .take(12)
                .map(char::from)
                .collect();
            let user_id = ruma::UserId::parse(format!("@{localpart}:{}", self.config.server_name))
                .map_err(Error::internal)?;
            if !self.users.exists(&user_id)? {
                break user_id;
            }
        };
        let session = self.users.create(&user_id, None, true, |batch, _| {
            self.devices
                .create_session_into(batch, first_session(request, &user_id, true))
        })?;
        Ok(Registered {
            user_id,
            session: Some(session),
        })
    }

    fn free_random_user_id(&self) -> Result<OwnedUserId> {
        loop {
            let localpart = format!("u{}", utils::random_string(11).to_lowercase());
            let user_id = self.users.parse_new_localpart(&localpart)?;
            if !self.users.exists(&user_id)? {
                return Ok(user_id);
            }
        }
    }
}
