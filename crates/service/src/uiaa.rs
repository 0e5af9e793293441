//! User-interactive authentication: sessions that remember which stages a
//! client has passed, and the stages themselves. A stage is one arm of
//! [`Services::check_stage`], so new stages (issued registration tokens, SSO)
//! plug in there.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::{
    OwnedUserId, UserId,
    api::{
        client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier},
        error::{ErrorKind, StandardErrorBody},
    },
};
use serde_json::Value as JsonValue;

use crate::{Error, ErrorCode, Result, Services, utils};

/// Open sessions at most; more answer `M_LIMIT_EXCEEDED` (each holds little,
/// see [`remembered`], but anyone can open them).
const MAX_SESSIONS: usize = 10_000;

/// Request parameters a session remembers, and how long each may be.
const REMEMBERED_KEYS: &[&str] = &[
    "username",
    "password",
    "device_id",
    "initial_device_display_name",
    "inhibit_login",
    "refresh_token",
];
const REMEMBERED_MAX_LEN: usize = 1024;

/// The parameters of a first request worth keeping for the later steps:
/// known keys with short scalar values, never the whole body.
fn remembered(body: Option<&JsonValue>) -> JsonValue {
    let mut kept = serde_json::Map::new();
    if let Some(JsonValue::Object(body)) = body {
        for key in REMEMBERED_KEYS {
            match body.get(*key) {
                Some(JsonValue::String(s)) if s.len() <= REMEMBERED_MAX_LEN => {
                    kept.insert((*key).to_owned(), JsonValue::String(s.clone()));
                }
                Some(JsonValue::Bool(b)) => {
                    kept.insert((*key).to_owned(), JsonValue::Bool(*b));
                }
                _ => {}
            }
        }
    }
    JsonValue::Object(kept)
}

struct UiaaSession {
    /// The user the auth is for; `None` during registration.
    user_id: Option<OwnedUserId>,
    flows: Vec<AuthFlow>,
    completed: Vec<AuthType>,
    expires_at: Instant,
    /// The body of the request that opened the session: clients may leave
    /// parameters out of later requests, and Synapse uses the first ones then.
    first_body: JsonValue,
    /// The user a password stage proved, for sessions opened without one.
    proven_user: Option<OwnedUserId>,
    /// What the session would allow ("remove a device"), shown on the SSO
    /// confirmation page so a person knows what they approve.
    purpose: &'static str,
}

/// Open user-interactive auth sessions, kept in memory: a session lives for
/// minutes, and a restart only asks the client to authenticate again.
pub struct Uiaa {
    sessions: Mutex<HashMap<String, UiaaSession>>,
    lifetime: Duration,
}

/// What a request carries into user-interactive auth.
pub struct UiaaRequest<'a> {
    /// The authenticated user, for everything but registration.
    pub user_id: Option<&'a UserId>,
    pub flows: Vec<AuthFlow>,
    pub auth: Option<&'a AuthData>,
    pub body: Option<&'a JsonValue>,
    /// What passing allows, in words ("remove a device").
    pub purpose: &'static str,
}

/// A finished user-interactive auth.
/// The session stays open (complete) until [`Uiaa::finish`]: if the
/// operation it guards fails, the client may retry it with the same session.
#[must_use = "call Uiaa::finish once the guarded operation succeeded"]
pub struct UiaaPassed {
    /// What the first request of the session said (the parameters kept).
    pub first_body: JsonValue,
    /// Who authenticated: the session's user, or the one a password stage
    /// proved when the request carried no access token.
    pub user_id: Option<OwnedUserId>,
    session: String,
}

impl UiaaPassed {
    /// The auth session's id (registration tokens reserve uses by it).
    pub fn session_id(&self) -> &str {
        &self.session
    }
}

impl Uiaa {
    pub(crate) fn new(lifetime: Duration) -> Self {
        Self {
            sessions: Mutex::default(),
            lifetime,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UiaaSession>> {
        utils::locked(&self.sessions)
    }

    fn open(
        &self,
        user_id: Option<&UserId>,
        flows: Vec<AuthFlow>,
        body: Option<&JsonValue>,
        purpose: &'static str,
    ) -> Result<String> {
        let now = Instant::now();
        let mut sessions = self.lock();
        sessions.retain(|_, s| s.expires_at > now);
        if sessions.len() >= MAX_SESSIONS {
            return Err(Error::new(
                ErrorCode::LimitExceeded,
                "Too many authentication sessions are open; try again later.",
            ));
        }
        let id = utils::random_string(24);
        sessions.insert(
            id.clone(),
            UiaaSession {
                user_id: user_id.map(ToOwned::to_owned),
                flows,
                completed: Vec::new(),
                expires_at: now + self.lifetime,
                first_body: remembered(body),
                proven_user: None,
                purpose,
            },
        );
        Ok(id)
    }

    /// Closes a session whose operation succeeded: it cannot be used again.
    pub fn finish(&self, passed: UiaaPassed) {
        self.lock().remove(&passed.session);
    }

    /// The user a live session authenticates and what for (`None` for
    /// registration or an unknown session).
    pub fn session_user(&self, id: &str) -> Option<(OwnedUserId, &'static str)> {
        let sessions = self.lock();
        let session = sessions.get(id).filter(|s| s.expires_at > Instant::now())?;
        Some((session.user_id.clone()?, session.purpose))
    }

    /// Marks a stage passed outside the API (single sign-on finished in a
    /// browser), for `user_id`'s session `id`.
    pub(crate) fn complete_stage(
        &self,
        id: &str,
        user_id: &UserId,
        stage: AuthType,
    ) -> Result<(), String> {
        let mut sessions = self.lock();
        let session = sessions
            .get_mut(id)
            .filter(|s| s.expires_at > Instant::now())
            .ok_or("This confirmation has expired. Start again from your Matrix app.")?;
        if session.user_id.as_deref() != Some(user_id) {
            return Err("This confirmation belongs to another account.".into());
        }
        if !session.flows.iter().any(|f| f.stages.contains(&stage)) {
            return Err(format!("The app did not ask for {stage} here."));
        }
        if !session.completed.contains(&stage) {
            session.completed.push(stage);
        }
        Ok(())
    }

    fn info(&self, id: &str) -> Option<UiaaInfo> {
        let sessions = self.lock();
        let session = sessions.get(id)?;
        let mut info = UiaaInfo::new(session.flows.clone());
        info.completed = session.completed.clone();
        info.session = Some(id.to_owned());
        // The spec requires `params`, even when no stage has parameters.
        info.params = serde_json::value::to_raw_value(&serde_json::json!({})).ok();
        Some(info)
    }
}

impl Services {
    /// Runs one step of user-interactive auth. `Ok` means a flow is complete;
    /// `Err(Error::Uiaa)` tells the client what is still needed.
    pub async fn user_interactive_auth(&self, request: UiaaRequest<'_>) -> Result<UiaaPassed> {
        let Some(auth) = request.auth else {
            let id = self.uiaa.open(
                request.user_id,
                request.flows,
                request.body,
                request.purpose,
            )?;
            return Err(self.uiaa_challenge(&id, None));
        };

        let id = match auth.session() {
            Some(id) => {
                let sessions = self.uiaa.lock();
                let session = sessions
                    .get(id)
                    .filter(|s| s.expires_at > Instant::now())
                    .ok_or_else(|| {
                        Error::new(ErrorCode::Unknown, "Unknown or expired auth session.")
                            .with_status(400)
                    })?;
                if session.user_id.as_deref() != request.user_id {
                    return Err(Error::forbidden(
                        "This auth session belongs to another user.",
                    ));
                }
                id.to_owned()
            }
            // Clients may start with a stage (matrix-nio sends m.login.dummy at once).
            None => self.uiaa.open(
                request.user_id,
                request.flows,
                request.body,
                request.purpose,
            )?,
        };

        let stage = match auth.auth_type() {
            // The SSO stage is passed in the browser; naming it here only
            // acknowledges that, like the fallback's bare `{session}`.
            // (ruma parses `{type: m.login.sso, session}` as a custom stage.)
            Some(stage) if stage.as_str() == AuthType::Sso.as_str() => {
                return self.finish_if_complete(&id);
            }
            Some(stage) => stage,
            // The fallback page's acknowledgement completes nothing by itself.
            None if matches!(auth, AuthData::FallbackAcknowledgement(_)) => {
                return self.finish_if_complete(&id);
            }
            None => return Err(Error::bad_json("Unknown auth type.")),
        };
        let offered = {
            let sessions = self.uiaa.lock();
            sessions
                .get(&id)
                .is_some_and(|s| s.flows.iter().any(|f| f.stages.contains(&stage)))
        };
        if !offered {
            let why = format!("The auth stage {stage} is not offered here.");
            return Err(self.uiaa_challenge(&id, Some(why)));
        }
        let proven = match self.check_stage(auth, request.user_id, &id).await {
            Ok(proven) => proven,
            Err(why) => return Err(self.uiaa_challenge(&id, Some(why))),
        };
        if let Some(session) = self.uiaa.lock().get_mut(&id) {
            if let Some(user) = proven {
                if session.proven_user.as_ref().is_some_and(|u| *u != user) {
                    return Err(Error::forbidden(
                        "This auth session belongs to another user.",
                    ));
                }
                session.proven_user = Some(user);
            }
            if !session.completed.contains(&stage) {
                session.completed.push(stage);
            }
        }
        self.finish_if_complete(&id)
    }

    /// Asks a logged-in user to prove it is them before a sensitive change:
    /// deleting devices, changing the password, deactivating, replacing
    /// cross-signing keys.
    ///
    /// Without an access token (`session` is `None`) the password stage
    /// itself says who the user is: [`UiaaPassed::user_id`]. An
    /// appservice's `as_token` is its proof (its puppets have no password
    /// to give), as Synapse and MSC4190 have it.
    pub async fn reauthenticate(
        &self,
        session: Option<&crate::users::Session>,
        auth: Option<&AuthData>,
        body: Option<&JsonValue>,
        purpose: &'static str,
    ) -> Result<UiaaPassed> {
        if let Some(session) = session.filter(|s| s.appservice.is_some()) {
            return Ok(UiaaPassed {
                first_body: body.cloned().unwrap_or_default(),
                user_id: Some(session.user_id.clone()),
                // No session was opened: finishing removes nothing.
                session: String::new(),
            });
        }
        let user_id = session.map(|s| &*s.user_id);
        let flows = match user_id {
            Some(user_id) => self.reauth_flows(user_id)?,
            None => vec![AuthFlow::new(vec![AuthType::Password])],
        };
        self.user_interactive_auth(UiaaRequest {
            user_id,
            flows,
            auth,
            body,
            purpose,
        })
        .await
    }

    /// How `user_id` can prove itself, as Synapse offers it: the password
    /// if it has one (and passwords are on), single sign-on if it has an
    /// identity at a configured provider.
    fn reauth_flows(&self, user_id: &UserId) -> Result<Vec<AuthFlow>> {
        let has_password = self
            .users
            .account(user_id)?
            .is_some_and(|a| a.password_hash.is_some());
        let mut flows = Vec::new();
        if has_password && self.config.sso.password_login_enabled() {
            flows.push(AuthFlow::new(vec![AuthType::Password]));
        }
        // Only identities at providers still configured can be re-proven.
        if !self.sso_providers_of(user_id)?.is_empty() {
            flows.push(AuthFlow::new(vec![AuthType::Sso]));
        }
        if flows.is_empty() {
            // Nothing else proves it: the password stage (which fails
            // honestly for an account without one).
            flows.push(AuthFlow::new(vec![AuthType::Password]));
        }
        Ok(flows)
    }

    /// Checks one stage: `Ok` with the user a password proved, `Err` with
    /// what to tell the user.
    async fn check_stage(
        &self,
        auth: &AuthData,
        user_id: Option<&UserId>,
        session: &str,
    ) -> Result<Option<OwnedUserId>, String> {
        match auth {
            AuthData::Dummy(_) => Ok(None),
            AuthData::Password(password) => {
                let UserIdentifier::Matrix(id) = &password.identifier else {
                    return Err("Only user-id identifiers are supported.".into());
                };
                let claimed = self
                    .users
                    .resolve_login_name(&id.user)
                    .ok_or("Invalid username or password.")?;
                if user_id.is_some_and(|u| u != claimed) {
                    return Err("You can only authenticate as yourself.".into());
                }
                self.users
                    .check_password(&claimed, &password.password)
                    .await
                    .map(|()| Some(claimed))
                    .map_err(|e| match e {
                        Error::Matrix { message, .. } => message,
                        Error::Uiaa(_) => "Authentication failed.".into(),
                    })
            }
            // The static token has unlimited uses; a stored one reserves a
            // use for this session.
            AuthData::RegistrationToken(token)
                if self.is_static_registration_token(&token.token) =>
            {
                Ok(None)
            }
            AuthData::RegistrationToken(token) => self
                .registration_tokens
                .reserve(&token.token, session)
                .map(|()| None),
            _ => Err("This auth stage is not supported.".into()),
        }
    }

    fn finish_if_complete(&self, id: &str) -> Result<UiaaPassed> {
        let sessions = self.uiaa.lock();
        let done = sessions.get(id).is_some_and(|s| {
            s.flows
                .iter()
                .any(|flow| flow.stages.iter().all(|stage| s.completed.contains(stage)))
        });
        if let Some(session) = sessions.get(id).filter(|_| done) {
            return Ok(UiaaPassed {
                first_body: session.first_body.clone(),
                user_id: session
                    .user_id
                    .clone()
                    .or_else(|| session.proven_user.clone()),
                session: id.to_owned(),
            });
        }
        drop(sessions);
        Err(self.uiaa_challenge(id, None))
    }

    fn uiaa_challenge(&self, id: &str, error: Option<String>) -> Error {
        let Some(mut info) = self.uiaa.info(id) else {
            return Error::new(ErrorCode::Unknown, "Unknown or expired auth session.")
                .with_status(400);
        };
        if let Some(message) = error {
            info.auth_error = Some(Box::new(StandardErrorBody::new(
                ErrorKind::Forbidden,
                message,
            )));
        }
        Error::Uiaa(Box::new(info))
    }
}
