//! OpenID tokens: a client asks for one (`POST /user/{userId}/openid/
//! request_token`) and hands it to a third party (a widget, an
//! integration manager), which asks this server over federation who it
//! belongs to (`GET /federation/v1/openid/userinfo`). Tokens say nothing
//! but the user id, live an hour, and are kept in the database so a
//! restart does not end them.

use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use crate::{Error, ErrorCode, Result, Services, tables, utils};

/// How long an OpenID token is valid, in seconds.
pub const OPENID_TOKEN_LIFETIME: u64 = 3600;

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct OpenIdToken {
    pub user_id: OwnedUserId,
    pub expires_at: u64,
}

impl Services {
    /// A new OpenID token for `user`.
    pub fn create_openid_token(&self, user: &UserId) -> Result<String> {
        let token = utils::random_string(32);
        let record = OpenIdToken {
            user_id: user.to_owned(),
            expires_at: utils::now_ms() + OPENID_TOKEN_LIFETIME * 1000,
        };
        let mut batch = self.db.batch();
        batch.put(&tables::OPENID_TOKENS, token.as_str(), &record)?;
        self.db.write(batch)?;
        Ok(token)
    }

    /// Whose a token is; `401 M_UNKNOWN_TOKEN` when it is unknown or
    /// expired (an expired one is deleted then).
    pub fn openid_user(&self, token: &str) -> Result<OwnedUserId> {
        let unknown = || Error::new(ErrorCode::UnknownToken, "Unknown or expired OpenID token.");
        let record = self
            .db
            .get(&tables::OPENID_TOKENS, token)?
            .ok_or_else(unknown)?;
        if record.expires_at <= utils::now_ms() {
            let mut batch = self.db.batch();
            batch.delete(&tables::OPENID_TOKENS, token)?;
            self.db.write(batch)?;
            return Err(unknown());
        }
        Ok(record.user_id)
    }
}
