//! Invite links: `<client base URL>/_conduit/invite/<token>`, a page for a
//! registration token that anyone holding the link can open (opening it
//! never uses the token) and register from with a plain form. Only
//! creating the account uses the token, through the same reservation and
//! count as the `m.login.registration_token` stage.

use ruma::OwnedUserId;

use crate::{
    Error, ErrorCode, Result, Services,
    registration_tokens::{Closed, TokenView},
    utils,
};

/// The path under which invite pages are served.
pub const INVITE_PATH: &str = "/_conduit/invite";

/// What an invite page shows.
pub struct InviteInfo {
    pub view: TokenView,
    /// Why it can no longer be used, or `None` while it can.
    pub unusable: Option<&'static str>,
}

impl Services {
    /// The invite link of a token, under the URL clients reach this server
    /// at (`well_known.client`, else `https://<server_name>`).
    pub fn invite_link(&self, token: &str) -> String {
        format!(
            "{}{INVITE_PATH}/{token}",
            self.config.client_base_url().trim_end_matches('/')
        )
    }

    /// An invite as its page shows it; `None` for unknown tokens.
    pub fn invite_info(&self, token: &str) -> Result<Option<InviteInfo>> {
        let Some(view) = self.registration_tokens.get(token)? else {
            return Ok(None);
        };
        let record = &view.record;
        let now = utils::now_ms();
        let unusable = if !self.config.allow_registration {
            Some("Registration is closed on this server.")
        } else {
            match record.closed(now) {
                Some(Closed::Revoked) => Some("This invite was revoked."),
                Some(Closed::Expired) => Some("This invite has expired."),
                Some(Closed::UsedUp) => Some("This invite has been used up."),
                None if !view.is_valid(now) => {
                    Some("This invite is being used right now; try again in a few minutes.")
                }
                None => None,
            }
        };
        Ok(Some(InviteInfo { view, unusable }))
    }

    /// The invite page's form: creates the account with the token (no
    /// device: the person signs in with their client afterwards).
    pub async fn register_by_invite(
        &self,
        token: &str,
        username: &str,
        password: &str,
    ) -> Result<OwnedUserId> {
        let user_id = self
            .register_from_page(Some(token), username, password)
            .await?;
        tracing::info!(%user_id, "the account came from an invite page");
        Ok(user_id)
    }

    /// A password account made from one of this server's pages (an invite
    /// page, the OAuth sign-up form), with a registration token when the
    /// server needs one: a stored token is reserved and counted like the
    /// `m.login.registration_token` stage's; the config's static token
    /// needs no count.
    pub async fn register_from_page(
        &self,
        token: Option<&str>,
        username: &str,
        password: &str,
    ) -> Result<OwnedUserId> {
        self.registration_open()?;
        let localpart = username.trim().to_lowercase();
        self.check_username_available(&localpart)?;
        let user_id = self.users.parse_new_localpart(&localpart)?;
        if password.is_empty() {
            return Err(Error::new(
                ErrorCode::MissingParam,
                "A password is required.",
            ));
        }
        let session = format!("page {}", utils::random_string(16));
        match token.filter(|t| !t.is_empty()) {
            Some(token) if self.is_static_registration_token(token) => {}
            Some(token) => self
                .registration_tokens
                .reserve(token, &session)
                .map_err(Error::forbidden)?,
            None if self.config.registration_requires_token => {
                return Err(Error::forbidden(
                    "A registration token (or invite link) is needed to sign up here.",
                ));
            }
            None => {}
        }
        let created = self
            .create_account(&user_id, password, &session, |_| Ok(()))
            .await;
        if created.is_err() {
            self.registration_tokens.release(&session);
        }
        created?;
        Ok(user_id)
    }
}
