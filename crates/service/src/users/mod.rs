//! Accounts: creation, passwords, deactivation, and the records behind them.
//! Devices and tokens live in [`devices`], profiles in [`profile`].

pub mod devices;
pub mod locks;
pub mod password;
pub mod profile;

use std::sync::{Arc, Mutex};

use conduit_storage::{Batch, Database};
use ruma::{OwnedUserId, ServerName, UserId};
use serde::{Deserialize, Serialize};

pub use self::devices::{DeviceRecord, NewSession, Session, TokenRecord};
use crate::{Error, ErrorCode, Result, tables, utils};

/// What the `accounts` table holds for each local user.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct AccountRecord {
    pub created_at: u64,
    /// Argon2 PHC string; `None` for accounts that cannot log in by password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub deactivated: bool,
    #[serde(default)]
    pub is_guest: bool,
    #[serde(default)]
    pub is_admin: bool,
    /// The appservice that registered the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appservice_id: Option<String>,
}

/// Local accounts.
pub struct Users {
    db: Arc<Database>,
    server_name: ruma::OwnedServerName,
    /// Held from "is this name free?" to "written", so two registrations of one
    /// name cannot both pass, and around every rewrite of an account record,
    /// so two changes to one record cannot lose each other.
    accounts_lock: Mutex<()>,
}

impl Users {
    pub(crate) fn new(db: Arc<Database>, server_name: &ServerName) -> Self {
        Self {
            db,
            server_name: server_name.to_owned(),
            accounts_lock: Mutex::new(()),
        }
    }

    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    pub fn is_local(&self, user_id: &UserId) -> bool {
        user_id.server_name() == self.server_name
    }

    pub fn account(&self, user_id: &UserId) -> Result<Option<AccountRecord>> {
        Ok(self.db.get(&tables::ACCOUNTS, user_id.as_str())?)
    }

    /// True when the user id is taken, including by a deactivated account:
    /// user ids are never reused.
    /// Whether any account exists (a first start has none).
    pub fn any(&self) -> Result<bool> {
        Ok(self
            .db
            .scan_prefix(&tables::ACCOUNTS, &conduit_storage::KeyPrefix::new())?
            .next()
            .is_some())
    }

    pub fn exists(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.db.contains(&tables::ACCOUNTS, user_id.as_str())?)
    }

    /// Checks a requested localpart against the spec's grammar and this
    /// server's reservations, and builds the user id.
    pub fn parse_new_localpart(&self, localpart: &str) -> Result<OwnedUserId> {
        let invalid = |why: &str| Err(Error::new(ErrorCode::InvalidUsername, why));
        if localpart.is_empty() {
            return invalid("The username must not be empty.");
        }
        if !localpart.bytes().all(
            |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'),
        ) {
            return invalid("The username may only contain a-z, 0-9 and . _ = - / +");
        }
        if localpart.starts_with('_') {
            return invalid("Usernames starting with '_' are reserved.");
        }
        if localpart.bytes().all(|b| b.is_ascii_digit()) {
            return invalid("Numeric usernames are reserved for guest accounts.");
        }
        let user_id = UserId::parse(format!("@{localpart}:{}", self.server_name))
            .map_err(|_| Error::new(ErrorCode::InvalidUsername, "Invalid username."))?;
        if user_id.as_str().len() > 255 {
            return invalid("The user id would be longer than 255 bytes.");
        }
        Ok(user_id)
    }

    /// Resolves what a user typed at login (`alice` or `@alice:server`) to a
    /// local user id, or `None` when it cannot name a local user.
    pub fn resolve_login_name(&self, name: &str) -> Option<OwnedUserId> {
        let user_id = if name.starts_with('@') {
            UserId::parse(name.to_lowercase()).ok()?
        } else {
            UserId::parse(format!("@{}:{}", name.to_lowercase(), self.server_name)).ok()?
        };
        self.is_local(&user_id).then_some(user_id)
    }

    /// Creates an account, and whatever `with` adds to the same batch (the
    /// first device's tokens, a registration token's use): all land
    /// together or not at all. The password is already hashed (hashing is
    /// slow and must not run under the lock).
    pub fn create<T>(
        &self,
        user_id: &UserId,
        password_hash: Option<String>,
        is_guest: bool,
        with: impl FnOnce(&mut Batch<'_>, &mut AccountRecord) -> Result<T>,
    ) -> Result<T> {
        let _guard = utils::locked(&self.accounts_lock);
        if self.exists(user_id)? {
            return Err(Error::new(
                ErrorCode::UserInUse,
                "The desired user ID is already taken.",
            ));
        }
        let mut record = AccountRecord {
            created_at: utils::now_ms(),
            password_hash,
            is_guest,
            ..Default::default()
        };
        let mut batch = self.db.batch();
        // Every account starts with its localpart as display name, as Synapse does.
        let name = serde_json::Value::String(user_id.localpart().to_owned());
        batch.put(&tables::PROFILES, (user_id.as_str(), "displayname"), &name)?;
        // `with` adds to the batch and may set flags on the account.
        let extra = with(&mut batch, &mut record)?;
        batch.put(&tables::ACCOUNTS, user_id.as_str(), &record)?;
        self.db.write(batch)?;
        Ok(extra)
    }

    /// Changes an account record: `change` edits it and may add to the
    /// batch (device removals), and the record is written with them. Every
    /// rewrite of a record goes through here, under the accounts lock, so
    /// two changes at once (an admin flag, a password) cannot lose one.
    /// `change` must not call back into account creation or updates (the
    /// lock is not reentrant).
    pub fn update_account(
        &self,
        user_id: &UserId,
        change: impl FnOnce(&mut AccountRecord, &mut Batch<'_>) -> Result<()>,
    ) -> Result<()> {
        let _guard = utils::locked(&self.accounts_lock);
        let mut record = self
            .account(user_id)?
            .ok_or_else(|| Error::not_found(format!("No such user: {user_id}")))?;
        let mut batch = self.db.batch();
        change(&mut record, &mut batch)?;
        batch.put(&tables::ACCOUNTS, user_id.as_str(), &record)?;
        self.db.write(batch)?;
        Ok(())
    }

    /// Makes a local account a server admin, or not.
    pub fn set_admin(&self, user_id: &UserId, admin: bool) -> Result<()> {
        self.update_account(user_id, |record, _| {
            record.is_admin = admin;
            Ok(())
        })
    }

    /// Checks a password for login or user-interactive auth.
    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<()> {
        let wrong = || Error::forbidden("Invalid username or password.");
        let Some(record) = self.account(user_id)? else {
            // Spend the same time as a real check, so user names cannot be probed by timing.
            password::verify_nothing(password.to_owned()).await;
            return Err(wrong());
        };
        // A deactivated account has no password left to check: it answers
        // like a wrong password, in the same time, so probing learns nothing.
        let Some(hash) = record.password_hash.filter(|_| !record.deactivated) else {
            password::verify_nothing(password.to_owned()).await;
            return Err(wrong());
        };
        if password::verify(password.to_owned(), hash).await {
            Ok(())
        } else {
            Err(wrong())
        }
    }

    /// Deactivates an account for good: the password goes, every device and
    /// token goes, and the profile is cleared. The user id stays taken.
    /// The ids of the devices it deleted.
    pub fn deactivate(&self, user_id: &UserId, devices: &devices::Devices) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        self.update_account(user_id, |record, batch| {
            record.deactivated = true;
            record.password_hash = None;
            for field in ["displayname", "avatar_url"] {
                batch.delete(&tables::PROFILES, (user_id.as_str(), field))?;
            }
            removed = devices.remove_all_into(batch, user_id, None)?;
            Ok(())
        })?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use ruma::{server_name, user_id};

    use super::*;

    fn users() -> (tempfile::TempDir, Users) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path(), tables::ALL, 1 << 20).unwrap());
        (dir, Users::new(db, server_name!("example.org")))
    }

    #[test]
    fn localpart_rules() {
        let (_dir, users) = users();
        assert_eq!(
            users
                .parse_new_localpart("alice.b-c=d/e+f_g")
                .unwrap()
                .as_str(),
            "@alice.b-c=d/e+f_g:example.org"
        );
        for bad in ["", "Alice", "a b", "_bot", "1234", "ä", &"a".repeat(250)] {
            let err = users.parse_new_localpart(bad).unwrap_err();
            assert_eq!(err.code(), Some(ErrorCode::InvalidUsername), "{bad}");
        }
    }

    #[test]
    fn login_names_resolve_to_local_users_only() {
        let (_dir, users) = users();
        assert_eq!(
            users.resolve_login_name("Alice").unwrap().as_str(),
            "@alice:example.org"
        );
        assert_eq!(
            users
                .resolve_login_name("@alice:example.org")
                .unwrap()
                .as_str(),
            "@alice:example.org"
        );
        assert!(users.resolve_login_name("@alice:other.org").is_none());
        assert!(users.resolve_login_name("@@@").is_none());
    }

    #[test]
    fn a_name_is_created_once_even_under_contention() {
        let (_dir, users) = users();
        let users = Arc::new(users);
        let alice = user_id!("@alice:example.org");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let users = users.clone();
                std::thread::spawn(move || users.create(alice, None, false, |_, _| Ok(())).is_ok())
            })
            .collect();
        let created = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(created, 1);
        assert!(users.exists(alice).unwrap());
        assert_eq!(
            users.profile_field(alice, "displayname").unwrap(),
            Some(serde_json::json!("alice"))
        );
    }

    #[test]
    fn concurrent_record_changes_keep_both() {
        let (_dir, users) = users();
        let users = Arc::new(users);
        let alice = user_id!("@alice:example.org");
        users.create(alice, None, false, |_, _| Ok(())).unwrap();
        let (started, start) = std::sync::mpsc::channel();
        let admin = {
            let users = users.clone();
            std::thread::spawn(move || {
                start.recv().unwrap();
                users.set_admin(alice, true).unwrap();
            })
        };
        // A password change that is slow between reading and writing the
        // record, with the admin change landing in the middle.
        users
            .update_account(alice, |record, _| {
                started.send(()).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(50));
                record.password_hash = Some("new hash".into());
                Ok(())
            })
            .unwrap();
        admin.join().unwrap();
        let record = users.account(alice).unwrap().unwrap();
        assert!(record.is_admin, "the admin change is not lost");
        assert_eq!(record.password_hash.as_deref(), Some("new hash"));
    }
}
