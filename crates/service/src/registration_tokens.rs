//! Registration tokens (Matrix spec v1.2+, MSC3231), with Synapse's
//! fields (`uses_allowed`, `pending`, `completed`, `expiry_time`) and ours
//! (`created_by`, `created_at`, `note`, `revoked`, `grants_admin`).
//!
//! A use is *reserved* (pending) when the UIA stage passes and *counted*
//! (completed) in the batch that creates the account. Reservations belong
//! to a UIA session and live in memory like the sessions do: one that
//! expires, or a restart, releases them. Validity counts pending plus
//! completed against `uses_allowed`, and reserving checks and takes a use
//! under one lock, so N registrations racing for a single-use token get one
//! reservation between them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use conduit_storage::{Batch, Database, KeyPrefix};
use serde::{Deserialize, Serialize};

use crate::{Error, ErrorCode, Result, tables, utils};

/// The longest token, as Synapse allows.
pub const MAX_TOKEN_LENGTH: usize = 64;

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct RegistrationToken {
    pub token: String,
    /// `None`: unlimited.
    pub uses_allowed: Option<u64>,
    pub completed: u64,
    /// Milliseconds since the epoch; `None`: never.
    pub expiry_time: Option<u64>,
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub created_at: u64,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub revoked: bool,
    /// The account made with it becomes a server admin (the first-start
    /// invite).
    #[serde(default)]
    pub grants_admin: bool,
}

/// A token as admins see it: the record plus its live reservations.
#[derive(Clone, Debug)]
pub struct TokenView {
    pub record: RegistrationToken,
    pub pending: u64,
}

/// Why a token opens nothing any more, whatever registrations are under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    Revoked,
    Expired,
    UsedUp,
}

impl RegistrationToken {
    /// `None` while the token may still open registration (its uses held
    /// by registrations under way aside).
    pub fn closed(&self, now_ms: u64) -> Option<Closed> {
        if self.revoked {
            Some(Closed::Revoked)
        } else if self.expiry_time.is_some_and(|t| t <= now_ms) {
            Some(Closed::Expired)
        } else if self.uses_allowed.is_some_and(|u| self.completed >= u) {
            Some(Closed::UsedUp)
        } else {
            None
        }
    }
}

impl TokenView {
    /// Whether a registration could use it now: open, and a use not held
    /// by another registration.
    pub fn is_valid(&self, now_ms: u64) -> bool {
        let r = &self.record;
        r.closed(now_ms).is_none()
            && r.uses_allowed
                .is_none_or(|u| self.pending + r.completed < u)
    }
}

/// What a new token should be.
#[derive(Default)]
pub struct NewToken {
    /// The token itself, or `None` for a random one of `length`.
    pub token: Option<String>,
    pub length: Option<usize>,
    pub uses_allowed: Option<u64>,
    pub expiry_time: Option<u64>,
    pub created_by: Option<String>,
    pub note: Option<String>,
    pub grants_admin: bool,
}

/// A change to a token: `Some(None)` clears a field.
#[derive(Default)]
pub struct TokenUpdate {
    pub uses_allowed: Option<Option<u64>>,
    pub expiry_time: Option<Option<u64>>,
    pub note: Option<Option<String>>,
    pub revoked: Option<bool>,
}

/// A use reserved by a UIA session.
struct Reservation {
    token: String,
    /// Past this the use no longer counts as pending (the session is over).
    expires_at: Instant,
    /// The session created its account: it cannot create another.
    used: bool,
}

impl Reservation {
    fn pending(&self, now: Instant) -> bool {
        !self.used && self.expires_at > now
    }
}

/// How long an entry outlives its expiry before it is forgotten, so a
/// registration that passed UIA just before the end still finds its
/// reservation (and is checked again) instead of finding nothing.
const FORGET_AFTER: Duration = Duration::from_secs(120);

pub struct RegistrationTokens {
    db: Arc<Database>,
    /// UIA session id -> the use it holds. The lock also covers every
    /// check-and-take and every count, so uses are never handed out twice.
    reservations: Mutex<HashMap<String, Reservation>>,
    session_lifetime: Duration,
}

/// Characters a custom token may use (Synapse's rule).
fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_LENGTH
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

impl RegistrationTokens {
    pub(crate) fn new(db: Arc<Database>, session_lifetime: Duration) -> Self {
        Self {
            db,
            reservations: Mutex::default(),
            session_lifetime,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Reservation>> {
        let mut reservations = utils::locked(&self.reservations);
        let now = Instant::now();
        reservations.retain(|_, r| r.expires_at + FORGET_AFTER > now);
        reservations
    }

    fn pending(reservations: &HashMap<String, Reservation>, token: &str) -> u64 {
        let now = Instant::now();
        reservations
            .values()
            .filter(|r| r.token == token && r.pending(now))
            .count() as u64
    }

    fn view(
        &self,
        reservations: &HashMap<String, Reservation>,
        record: RegistrationToken,
    ) -> TokenView {
        TokenView {
            pending: Self::pending(reservations, &record.token),
            record,
        }
    }

    pub fn get(&self, token: &str) -> Result<Option<TokenView>> {
        let reservations = self.lock();
        Ok(self
            .db
            .get(&tables::REGISTRATION_TOKENS, token)?
            .map(|record| self.view(&reservations, record)))
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Result<Vec<TokenView>> {
        let reservations = self.lock();
        let mut all = self
            .db
            .scan_prefix(&tables::REGISTRATION_TOKENS, &KeyPrefix::new())?
            .map(|row| Ok(self.view(&reservations, row?.1)))
            .collect::<Result<Vec<_>>>()?;
        all.sort_by(|a, b| {
            (a.record.created_at, &a.record.token).cmp(&(b.record.created_at, &b.record.token))
        });
        Ok(all)
    }

    /// Whether a registration could use the token now (the validity API).
    pub fn is_valid(&self, token: &str) -> Result<bool> {
        Ok(self
            .get(token)?
            .is_some_and(|view| view.is_valid(utils::now_ms())))
    }

    pub fn create(&self, new: NewToken) -> Result<TokenView> {
        let now = utils::now_ms();
        if new.expiry_time.is_some_and(|t| t <= now) {
            return Err(Error::invalid_param("expiry_time must not be in the past"));
        }
        let token = match new.token {
            Some(token) => {
                if !valid_token(&token) {
                    return Err(Error::invalid_param(format!(
                        "token must consist only of characters matched by the regex [A-Za-z0-9._~-] and be at most {MAX_TOKEN_LENGTH} characters long"
                    )));
                }
                token
            }
            None => {
                let length = new.length.unwrap_or(16);
                if !(1..=MAX_TOKEN_LENGTH).contains(&length) {
                    return Err(Error::invalid_param(format!(
                        "length must be an integer between 1 and {MAX_TOKEN_LENGTH}"
                    )));
                }
                loop {
                    let token = utils::random_string(length);
                    if self
                        .db
                        .get(&tables::REGISTRATION_TOKENS, token.as_str())?
                        .is_none()
                    {
                        break token;
                    }
                }
            }
        };
        let reservations = self.lock();
        if self
            .db
            .get(&tables::REGISTRATION_TOKENS, token.as_str())?
            .is_some()
        {
            return Err(Error::invalid_param(format!(
                "Token already exists: {token}"
            )));
        }
        let record = RegistrationToken {
            token,
            uses_allowed: new.uses_allowed,
            completed: 0,
            expiry_time: new.expiry_time,
            created_by: new.created_by,
            created_at: now,
            note: new.note,
            revoked: false,
            grants_admin: new.grants_admin,
        };
        self.put(&record)?;
        Ok(self.view(&reservations, record))
    }

    pub fn update(&self, token: &str, update: TokenUpdate) -> Result<TokenView> {
        let reservations = self.lock();
        let mut record = self
            .db
            .get(&tables::REGISTRATION_TOKENS, token)?
            .ok_or_else(|| not_found(token))?;
        if let Some(Some(expiry)) = update.expiry_time
            && expiry <= utils::now_ms()
        {
            return Err(Error::invalid_param("expiry_time must not be in the past"));
        }
        if let Some(uses) = update.uses_allowed {
            record.uses_allowed = uses;
        }
        if let Some(expiry) = update.expiry_time {
            record.expiry_time = expiry;
        }
        if let Some(note) = update.note {
            record.note = note;
        }
        if let Some(revoked) = update.revoked {
            record.revoked = revoked;
        }
        self.put(&record)?;
        Ok(self.view(&reservations, record))
    }

    pub fn delete(&self, token: &str) -> Result<()> {
        let _reservations = self.lock();
        if self.db.get(&tables::REGISTRATION_TOKENS, token)?.is_none() {
            return Err(not_found(token));
        }
        let mut batch = self.db.batch();
        batch.delete(&tables::REGISTRATION_TOKENS, token)?;
        self.db.write(batch)?;
        Ok(())
    }

    fn put(&self, record: &RegistrationToken) -> Result<()> {
        let mut batch = self.db.batch();
        batch.put(&tables::REGISTRATION_TOKENS, record.token.as_str(), record)?;
        self.db.write(batch)?;
        Ok(())
    }

    /// The UIA stage: reserves a use of `token` for `session` if one is
    /// left. A session keeps the use it already holds.
    pub(crate) fn reserve(&self, token: &str, session: &str) -> Result<(), String> {
        let mut reservations = self.lock();
        match reservations.get(session) {
            Some(r) if r.used => {
                return Err("This registration already created its account.".into());
            }
            Some(r) if r.token == token && r.pending(Instant::now()) => return Ok(()),
            // Another token (or an expired hold): check afresh below.
            _ => {
                reservations.remove(session);
            }
        }
        let record = self
            .db
            .get(&tables::REGISTRATION_TOKENS, token)
            .map_err(|e| e.to_string())?
            .ok_or("Invalid registration token.")?;
        let view = self.view(&reservations, record);
        if !view.is_valid(utils::now_ms()) {
            return Err(
                "This registration token is expired, revoked, used up, or held by a registration in progress."
                    .into(),
            );
        }
        reservations.insert(
            session.to_owned(),
            Reservation {
                token: token.to_owned(),
                expires_at: Instant::now() + self.session_lifetime,
                used: false,
            },
        );
        Ok(())
    }

    /// Account creation: the use `session` reserved, if any, counted in
    /// `batch` by `create` (which writes the batch). The lock is held
    /// across, so two completions never count from the same `completed`;
    /// the reservation is then marked used, so the same session cannot
    /// create a second account. A reservation that expired meanwhile is
    /// checked again against the token's uses. `count_use` answers whether
    /// the token grants admin (false for sessions that reserved nothing:
    /// open registration or the static token).
    pub(crate) fn complete<T>(
        &self,
        session: &str,
        create: impl FnOnce(&mut dyn FnMut(&mut Batch<'_>) -> Result<bool>) -> Result<T>,
    ) -> Result<T> {
        let mut reservations = self.lock();
        let now = Instant::now();
        let token = match reservations.get(session) {
            None => None,
            Some(r) if r.used => {
                return Err(Error::forbidden(
                    "This registration already created its account.",
                ));
            }
            Some(r) => {
                if !r.pending(now) {
                    // Its hold lapsed: the use must still be free.
                    let record = self
                        .db
                        .get(&tables::REGISTRATION_TOKENS, r.token.as_str())?
                        .ok_or_else(|| Error::forbidden("The registration token was deleted."))?;
                    let view = self.view(&reservations, record);
                    if !view.is_valid(utils::now_ms()) {
                        return Err(Error::forbidden(
                            "The registration token's reservation expired and it is no longer valid.",
                        ));
                    }
                }
                Some(r.token.clone())
            }
        };
        let mut count_use = |batch: &mut Batch<'_>| -> Result<bool> {
            let Some(token) = &token else {
                return Ok(false);
            };
            let mut record = self
                .db
                .get(&tables::REGISTRATION_TOKENS, token.as_str())?
                .ok_or_else(|| {
                    Error::new(ErrorCode::Forbidden, "The registration token was deleted.")
                })?;
            record.completed += 1;
            batch.put(&tables::REGISTRATION_TOKENS, token.as_str(), &record)?;
            Ok(record.grants_admin)
        };
        let result = create(&mut count_use)?;
        if let Some(reservation) = reservations.get_mut(session) {
            reservation.used = true;
            reservation.expires_at = now + self.session_lifetime;
        }
        Ok(result)
    }

    /// Drops a session's reservation (its registration failed for good).
    pub(crate) fn release(&self, session: &str) {
        self.lock().remove(session);
    }

    /// Whether some token may still open registration (otherwise
    /// registration needing a token is closed). Reserved uses count as open:
    /// the session holding one must be able to finish.
    pub fn any_usable(&self) -> Result<bool> {
        let now = utils::now_ms();
        Ok(self
            .list()?
            .iter()
            .any(|view| view.record.closed(now).is_none()))
    }
}

fn not_found(token: &str) -> Error {
    Error::not_found(format!("No such registration token: {token}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> (tempfile::TempDir, RegistrationTokens) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path(), tables::ALL, 1 << 20).unwrap());
        (dir, RegistrationTokens::new(db, Duration::from_millis(200)))
    }

    #[test]
    fn reservations_count_until_they_expire_and_completions_count_for_good() {
        let (_dir, tokens) = tokens();
        let made = tokens
            .create(NewToken {
                token: Some("abc".into()),
                uses_allowed: Some(1),
                ..NewToken::default()
            })
            .unwrap();
        assert!(made.is_valid(utils::now_ms()));
        tokens.reserve("abc", "s1").unwrap();
        assert!(
            tokens.reserve("abc", "s2").is_err(),
            "the only use is pending"
        );
        tokens.reserve("abc", "s1").unwrap();
        assert!(!tokens.is_valid("abc").unwrap());
        std::thread::sleep(Duration::from_millis(250));
        assert!(tokens.is_valid("abc").unwrap(), "the reservation expired");
        tokens.reserve("abc", "s2").unwrap();
        let admin = tokens
            .complete("s2", |count| {
                let mut batch = tokens.db.batch();
                let admin = count(&mut batch)?;
                tokens.db.write(batch)?;
                Ok(admin)
            })
            .unwrap();
        assert!(!admin);
        let view = tokens.get("abc").unwrap().unwrap();
        assert_eq!((view.pending, view.record.completed), (0, 1));
        assert!(tokens.reserve("abc", "s3").is_err());
        // The session that created its account cannot create another.
        assert!(tokens.reserve("abc", "s2").is_err());
        let again = tokens.complete("s2", |count| {
            let mut batch = tokens.db.batch();
            count(&mut batch)
        });
        assert!(again.is_err());
    }

    #[test]
    fn a_lapsed_hold_is_checked_again_at_completion() {
        let (_dir, tokens) = tokens();
        tokens
            .create(NewToken {
                token: Some("one".into()),
                uses_allowed: Some(1),
                ..NewToken::default()
            })
            .unwrap();
        tokens.reserve("one", "slow").unwrap();
        std::thread::sleep(Duration::from_millis(250));
        // Someone else takes the freed use; the slow session may not.
        tokens.reserve("one", "fast").unwrap();
        let slow = tokens.complete("slow", |count| {
            let mut batch = tokens.db.batch();
            count(&mut batch)
        });
        assert!(slow.is_err());
    }

    #[test]
    fn bad_tokens_and_fields_are_refused() {
        let (_dir, tokens) = tokens();
        for bad in ["", "has space", "ü", &"x".repeat(65)] {
            let made = tokens.create(NewToken {
                token: Some(bad.into()),
                ..NewToken::default()
            });
            assert!(made.is_err(), "{bad:?}");
        }
        assert!(
            tokens
                .create(NewToken {
                    length: Some(0),
                    ..NewToken::default()
                })
                .is_err()
        );
        assert!(
            tokens
                .create(NewToken {
                    length: Some(65),
                    ..NewToken::default()
                })
                .is_err()
        );
        assert_eq!(
            tokens
                .create(NewToken {
                    length: Some(20),
                    ..NewToken::default()
                })
                .unwrap()
                .record
                .token
                .len(),
            20
        );
        assert!(
            tokens
                .create(NewToken {
                    expiry_time: Some(1),
                    ..NewToken::default()
                })
                .is_err()
        );
        tokens
            .create(NewToken {
                token: Some("dup".into()),
                ..NewToken::default()
            })
            .unwrap();
        assert!(
            tokens
                .create(NewToken {
                    token: Some("dup".into()),
                    ..NewToken::default()
                })
                .is_err()
        );
        let revoked = tokens
            .update(
                "dup",
                TokenUpdate {
                    revoked: Some(true),
                    ..TokenUpdate::default()
                },
            )
            .unwrap();
        assert!(!revoked.is_valid(utils::now_ms()));
        assert!(tokens.update("nope", TokenUpdate::default()).is_err());
        tokens.delete("dup").unwrap();
        assert!(tokens.delete("dup").is_err());
    }
}
