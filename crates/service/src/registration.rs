//! Account registration (`POST /register`): which flows are offered, the
//! registration-token stage, and account creation at the end of the flow.

use ruma::{
    DeviceId, OwnedUserId,
    api::client::uiaa::{AuthData, AuthFlow, AuthType},
};
use serde_json::Value as JsonValue;

use crate::{
    Error, ErrorCode, Result, Services,
    uiaa::UiaaRequest,
    users::{NewSession, devices::SessionRequest, password},
    utils,
};

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
    }
}

impl Services {
    /// The flows `/register` offers, or why registration is closed.
    pub fn registration_flows(&self) -> Result<Vec<AuthFlow>> {
        let config = &self.config;
        if !config.allow_registration {
            return Err(Error::forbidden("Registration is disabled on this server."));
        }
        if !config.registration_requires_token {
            return Ok(vec![AuthFlow::new(vec![AuthType::Dummy])]);
        }
        if config.registration_token.is_none() {
            return Err(Error::forbidden(
                "Registration needs a registration token, and this server has none to give.",
            ));
        }
        Ok(vec![AuthFlow::new(vec![AuthType::RegistrationToken])])
    }

    /// True when `token` opens registration. Compared in constant time.
    pub fn registration_token_is_valid(&self, token: &str) -> bool {
        let Some(expected) = &self.config.registration_token else {
            return false;
        };
        let (a, b) = (expected.as_bytes(), token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// `GET /register/available`: free and valid, or the error saying why not.
    pub fn check_username_available(&self, localpart: &str) -> Result<()> {
        let user_id = self.users.parse_new_localpart(localpart)?;
        if self.users.exists(&user_id)? {
            return Err(Error::new(
                ErrorCode::UserInUse,
                "The desired user ID is already taken.",
            ));
        }
        Ok(())
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
            })
            .await?;

        // Later steps of the flow may leave out what the first one said.
        let first = |key: &str| passed.first_body.get(key).and_then(JsonValue::as_str);
        let password = request
            .password
            .or_else(|| first("password"))
            .ok_or_else(|| Error::new(ErrorCode::MissingParam, "A password is required."))?;
        let user_id = match request.username.or_else(|| first("username")) {
            Some(name) => self.users.parse_new_localpart(&name.to_lowercase())?,
            None => self.free_random_user_id()?,
        };
        let hash = password::hash(password.to_owned()).await?;
        // The account and its first device land in one batch.
        let session = self.users.create(&user_id, Some(hash), false, |batch| {
            if request.inhibit_login {
                return Ok(None);
            }
            let session = self
                .devices
                .create_session_into(batch, first_session(&request, &user_id, false))?;
            Ok(Some(session))
        })?;
        self.uiaa.finish(passed);
        tracing::info!(%user_id, "registered a new account");
        Ok(Registered { user_id, session })
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
        let session = self.users.create(&user_id, None, true, |batch| {
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
