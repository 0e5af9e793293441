//! The account management page the OAuth 2.0 metadata names
//! (`account_management_uri`): a person signs in there with their password
//! or an SSO provider and sees their devices, and signs one out. A sign-in there is a browser
//! session kept in memory for [`SESSION_LIFETIME`] (a restart asks again),
//! with its own token for the page's forms, so another site cannot post
//! them in the person's name.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::OwnedUserId;

use crate::{Error, Result, Services, sso::make_room, utils};

/// How long a sign-in on the account page lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// Where the page lives, under the client base URL.
pub const ACCOUNT_PATH: &str = "/_conduit/account";

/// A signed-in browser.
#[derive(Clone, Debug)]
pub struct AccountSession {
    pub user_id: OwnedUserId,
    /// Goes with every form of the page.
    pub form_token: String,
    expires_at: Instant,
}

#[derive(Default)]
pub struct AccountSessions {
    sessions: Mutex<HashMap<String, AccountSession>>,
}

impl Services {
    /// The page's password form: a new browser session (its cookie value).
    pub async fn account_page_login(&self, username: &str, password: &str) -> Result<String> {
        if !self.config.sso.password_login_enabled() {
            return Err(Error::forbidden(
                "Password login is turned off on this server.",
            ));
        }
        let user_id = self
            .users
            .resolve_login_name(username.trim())
            .ok_or_else(|| Error::forbidden("Wrong username or password."))?;
        self.users
            .check_password(&user_id, password)
            .await
            .map_err(|_| Error::forbidden("Wrong username or password."))?;
        Ok(self.account_page_open(&user_id))
    }

    /// A new browser session for `user_id`, who proved it is them (a
    /// password, an SSO provider); its cookie value.
    pub fn account_page_open(&self, user_id: &ruma::UserId) -> String {
        let id = utils::random_string(32);
        let mut sessions = utils::locked(&self.account_sessions.sessions);
        make_room(&mut sessions, |s| s.expires_at);
        sessions.insert(
            id.clone(),
            AccountSession {
                user_id: user_id.to_owned(),
                form_token: utils::random_string(32),
                expires_at: Instant::now() + SESSION_LIFETIME,
            },
        );
        id
    }

    /// The browser session behind a cookie, while it lasts and its
    /// account is active.
    pub fn account_page_session(&self, id: &str) -> Option<AccountSession> {
        let session = utils::locked(&self.account_sessions.sessions)
            .get(id)
            .filter(|s| s.expires_at > Instant::now())
            .cloned()?;
        let active = self
            .users
            .account(&session.user_id)
            .ok()
            .flatten()
            .is_some_and(|a| !a.deactivated);
        active.then_some(session)
    }

    /// Ends every page sign-in of `user_id` (a password change, logout-all).
    pub(crate) fn account_page_forget(&self, user_id: &ruma::UserId) {
        utils::locked(&self.account_sessions.sessions).retain(|_, s| s.user_id != user_id);
    }

    /// Signs the page out.
    pub fn account_page_logout(&self, id: &str) {
        utils::locked(&self.account_sessions.sessions).remove(id);
    }
}
