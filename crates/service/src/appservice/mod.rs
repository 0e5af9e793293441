//! Application services (bridges and bots): their registrations, the
//! namespaces they claim, and who their `as_token` lets them act as.
//!
//! Registrations come from the YAML files the config names
//! (`appservice_registration_files`), read once at start, and from
//! `appservice register` (kept in the database): a file that does not
//! parse, or that clashes with another (same id, same token, a sender in
//! another's namespace), stops the start with a sentence saying which and
//! why.

mod accounts;
mod auth;
mod encryption;
mod ephemeral;
mod interest;
mod queries;
mod sender;
mod thirdparty;

pub use auth::NO_DEVICE;

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{Arc, Mutex, OnceLock, RwLock, Weak},
};

use conduit_storage::{Database, KeyPrefix, Str};
use regex::Regex;
use ruma::{OwnedUserId, UserId};
use serde::Deserialize;

use crate::{tables, utils};

/// A registration file as the Application Service API describes it.
#[derive(Clone, Debug, Deserialize)]
pub struct Registration {
    pub id: String,
    /// Where transactions go; `null` for an appservice that only sends.
    #[serde(default)]
    pub url: Option<String>,
    pub as_token: String,
    pub hs_token: String,
    pub sender_localpart: String,
    #[serde(default)]
    pub namespaces: Namespaces,
    #[serde(default)]
    pub rate_limited: Option<bool>,
    #[serde(default)]
    pub protocols: Vec<String>,
    /// Send it the typing and receipts of its rooms (MSC2409).
    #[serde(default, alias = "de.sorunome.msc2409.push_ephemeral")]
    pub receive_ephemeral: bool,
    /// Send it its users' one-time-key counts and unused fallback key
    /// types, and whose device lists changed (MSC3202, the key Synapse
    /// and mautrix use).
    #[serde(default, rename = "org.matrix.msc3202")]
    pub msc3202: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Namespaces {
    #[serde(default)]
    pub users: Vec<NamespaceDef>,
    #[serde(default)]
    pub aliases: Vec<NamespaceDef>,
    #[serde(default)]
    pub rooms: Vec<NamespaceDef>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct NamespaceDef {
    #[serde(default)]
    pub exclusive: bool,
    pub regex: String,
}

/// One namespace, compiled: it matches whole ids only.
#[derive(Debug)]
struct Namespace {
    exclusive: bool,
    regex: Regex,
}

fn compile(defs: &[NamespaceDef], what: &str) -> Result<Vec<Namespace>, String> {
    defs.iter()
        .map(|def| {
            Regex::new(&format!("^(?:{})$", def.regex))
                .map(|regex| Namespace {
                    exclusive: def.exclusive,
                    regex,
                })
                .map_err(|e| format!("the {what} namespace {:?} is not a regex: {e}", def.regex))
        })
        .collect()
}

/// A registered application service.
#[derive(Debug)]
pub struct Appservice {
    pub registration: Registration,
    /// `@sender_localpart:server`: the appservice's own user.
    pub sender: OwnedUserId,
    users: Vec<Namespace>,
    aliases: Vec<Namespace>,
    rooms: Vec<Namespace>,
}

impl Appservice {
    pub fn new(registration: Registration, server_name: &str) -> Result<Self, String> {
        let sender = UserId::parse(format!("@{}:{server_name}", registration.sender_localpart))
            .map_err(|e| format!("sender_localpart is not a user name: {e}"))?;
        if registration.as_token.is_empty() || registration.hs_token.is_empty() {
            return Err("as_token and hs_token must not be empty".into());
        }
        if registration.as_token == registration.hs_token {
            return Err("as_token and hs_token must differ".into());
        }
        Ok(Self {
            users: compile(&registration.namespaces.users, "users")?,
            aliases: compile(&registration.namespaces.aliases, "aliases")?,
            rooms: compile(&registration.namespaces.rooms, "rooms")?,
            sender,
            registration,
        })
    }

    pub fn id(&self) -> &str {
        &self.registration.id
    }

    /// Whether the appservice may act as `user_id`: its sender, or a user of
    /// its namespaces.
    pub fn is_user(&self, user_id: &UserId) -> bool {
        user_id == self.sender
            || self
                .users
                .iter()
                .any(|n| n.regex.is_match(user_id.as_str()))
    }

    pub fn claims_user_exclusively(&self, user_id: &UserId) -> bool {
        user_id == self.sender
            || self
                .users
                .iter()
                .any(|n| n.exclusive && n.regex.is_match(user_id.as_str()))
    }

    pub fn is_alias(&self, alias: &str) -> bool {
        self.aliases.iter().any(|n| n.regex.is_match(alias))
    }

    pub fn claims_alias_exclusively(&self, alias: &str) -> bool {
        self.aliases
            .iter()
            .any(|n| n.exclusive && n.regex.is_match(alias))
    }

    pub fn has_alias_namespaces(&self) -> bool {
        !self.aliases.is_empty()
    }

    pub fn is_room(&self, room_id: &str) -> bool {
        self.rooms.iter().any(|n| n.regex.is_match(room_id))
    }
}

/// The registered appservices at one moment: readers take a snapshot (one
/// `Arc` clone) and never wait for a registration being added.
#[derive(Debug, Default)]
pub struct Registry {
    all: Vec<Arc<Appservice>>,
    by_token: HashMap<String, Arc<Appservice>>,
}

impl Registry {
    fn with(&self, appservice: Appservice) -> Result<Self, String> {
        if self.all.iter().any(|a| a.id() == appservice.id()) {
            return Err(format!(
                "the id {:?} is registered already",
                appservice.id()
            ));
        }
        let tokens = [
            &appservice.registration.as_token,
            &appservice.registration.hs_token,
        ];
        if self.all.iter().any(|a| {
            tokens.contains(&&a.registration.as_token) || tokens.contains(&&a.registration.hs_token)
        }) {
            return Err("its as_token or hs_token is another appservice's".into());
        }
        if let Some(other) = self
            .all
            .iter()
            .find(|a| a.sender == appservice.sender || a.is_user(&appservice.sender))
        {
            return Err(format!(
                "its sender {} is in the namespace of {:?}",
                appservice.sender,
                other.id()
            ));
        }
        let mut all = self.all.clone();
        all.push(Arc::new(appservice));
        Ok(Self::of(all))
    }

    fn without(&self, id: &str) -> Self {
        Self::of(self.all.iter().filter(|a| a.id() != id).cloned().collect())
    }

    fn of(all: Vec<Arc<Appservice>>) -> Self {
        let by_token = all
            .iter()
            .map(|a| (a.registration.as_token.clone(), a.clone()))
            .collect();
        Self { all, by_token }
    }

    pub fn all(&self) -> &[Arc<Appservice>] {
        &self.all
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Appservice>> {
        self.all.iter().find(|a| a.id() == id)
    }

    pub fn by_as_token(&self, token: &str) -> Option<&Arc<Appservice>> {
        self.by_token.get(token)
    }

    /// The appservice that claims `user_id` exclusively, if any.
    pub fn exclusive_owner_of_user(&self, user_id: &UserId) -> Option<&Arc<Appservice>> {
        self.all.iter().find(|a| a.claims_user_exclusively(user_id))
    }

    pub fn exclusive_owner_of_alias(&self, alias: &str) -> Option<&Arc<Appservice>> {
        self.all.iter().find(|a| a.claims_alias_exclusively(alias))
    }
}

/// Where a registration came from: the config's files cannot be
/// unregistered by a command (the next start would bring them back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    File,
    Command,
}

/// Every registered appservice: the config's files, read at start, and
/// those registered by `appservice register` (table `appservices`).
pub struct Appservices {
    current: RwLock<Arc<Registry>>,
    sources: Mutex<HashMap<String, Source>>,
    server_name: String,
    /// The appservices a transaction worker runs for.
    workers: Mutex<HashSet<String>>,
    services: OnceLock<Weak<crate::Services>>,
    client: OnceLock<reqwest::Client>,
    /// Ephemeral events waiting, per appservice (`ephemeral.rs`).
    ephemeral: Mutex<HashMap<String, std::collections::VecDeque<serde_json::Value>>>,
    /// The next id of an own transaction (`sender.rs`).
    own_txns: std::sync::atomic::AtomicU64,
    /// Devices whose key counts changed, per MSC3202 appservice
    /// (`encryption.rs`).
    key_counts: Mutex<HashMap<String, HashSet<(OwnedUserId, String)>>>,
    /// MSC3202 appservices with device-list changes to look at.
    device_list_nudges: Mutex<HashSet<String>>,
}

impl Appservices {
    /// Reads the registration files and the registered ones.
    pub(crate) fn load(
        db: &Database,
        files: &[impl AsRef<Path>],
        server_name: &str,
    ) -> Result<Self, String> {
        let mut registry = Registry::default();
        let mut sources = HashMap::new();
        for file in files {
            let file = file.as_ref();
            let with_file = |e: String| format!("appservice registration {}: {e}", file.display());
            let text = std::fs::read_to_string(file).map_err(|e| with_file(e.to_string()))?;
            let appservice =
                Appservice::new(parse_registration(&text).map_err(with_file)?, server_name)
                    .map_err(with_file)?;
            sources.insert(appservice.id().to_owned(), Source::File);
            registry = registry.with(appservice).map_err(with_file)?;
        }
        let rows = db
            .scan_prefix(&tables::APPSERVICES, &KeyPrefix::new())
            .map_err(|e| e.to_string())?;
        for row in rows {
            let (id, text) = row.map_err(|e| e.to_string())?;
            let with_id = |e: String| format!("registered appservice {id:?}: {e}");
            let appservice =
                Appservice::new(parse_registration(&text).map_err(with_id)?, server_name)
                    .map_err(with_id)?;
            sources.insert(id.clone(), Source::Command);
            registry = registry.with(appservice).map_err(with_id)?;
        }
        Ok(Self {
            current: RwLock::new(Arc::new(registry)),
            sources: Mutex::new(sources),
            server_name: server_name.to_owned(),
            workers: Mutex::default(),
            services: OnceLock::new(),
            client: OnceLock::new(),
            ephemeral: Mutex::default(),
            own_txns: std::sync::atomic::AtomicU64::new(utils::now_ms()),
            key_counts: Mutex::default(),
            device_list_nudges: Mutex::default(),
        })
    }

    /// The registered appservices now.
    pub fn registry(&self) -> Arc<Registry> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn source(&self, id: &str) -> Option<Source> {
        utils::locked(&self.sources).get(id).copied()
    }

    /// Registers the appservice `text` describes, kept in `db`.
    pub(crate) fn register(&self, db: &Database, text: &str) -> Result<Arc<Appservice>, String> {
        let appservice = Appservice::new(parse_registration(text)?, &self.server_name)?;
        let id = appservice.id().to_owned();
        let mut sources = utils::locked(&self.sources);
        let next = self.registry().with(appservice)?;
        let mut batch = db.batch();
        batch
            .put(&tables::APPSERVICES, id.as_str(), &text.to_owned())
            .and_then(|()| db.write(batch))
            .map_err(|e| e.to_string())?;
        let registered = next.get(&id).cloned().expect("just added");
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
        sources.insert(id, Source::Command);
        Ok(registered)
    }

    /// Removes a registered appservice; what waits for it goes too.
    pub(crate) fn unregister(&self, db: &Database, id: &str) -> Result<(), String> {
        let mut sources = utils::locked(&self.sources);
        match sources.get(id) {
            None => return Err(format!("no appservice is registered as {id:?}")),
            Some(Source::File) => {
                return Err(format!(
                    "{id:?} comes from a file in appservice_registration_files: remove it there"
                ));
            }
            Some(Source::Command) => {}
        }
        let mut batch = db.batch();
        let prefix = KeyPrefix::new().push::<Str>(id);
        let queued = db
            .scan_prefix(&tables::APPSERVICE_QUEUE, &prefix)
            .map_err(|e| e.to_string())?;
        for row in queued {
            let (key, _) = row.map_err(|e| e.to_string())?;
            batch
                .delete(&tables::APPSERVICE_QUEUE, (key.0.as_str(), key.1))
                .map_err(|e| e.to_string())?;
        }
        let to_device = db
            .scan_prefix(&tables::APPSERVICE_TO_DEVICE, &prefix)
            .map_err(|e| e.to_string())?;
        for row in to_device {
            let ((_, position, index), _) = row.map_err(|e| e.to_string())?;
            batch
                .delete(&tables::APPSERVICE_TO_DEVICE, (id, position, index))
                .map_err(|e| e.to_string())?;
        }
        batch
            .delete(&tables::APPSERVICES, id)
            .and_then(|()| batch.delete(&tables::APPSERVICE_TXNS, id))
            .and_then(|()| batch.delete(&tables::APPSERVICE_DEVICE_LISTS, id))
            .and_then(|()| db.write(batch))
            .map_err(|e| e.to_string())?;
        let next = self.registry().without(id);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
        sources.remove(id);
        Ok(())
    }
}

impl crate::Services {
    /// Creates the appservice's own user when it does not exist yet: it
    /// has no password, only the `as_token` acts as it.
    pub(crate) fn ensure_appservice_sender(&self, appservice: &Appservice) -> crate::Result<()> {
        if self.users.exists(&appservice.sender)? {
            return Ok(());
        }
        self.users
            .create(&appservice.sender, None, false, |_, _| Ok(()))?;
        tracing::info!(appservice = appservice.id(), user_id = %appservice.sender, "created the appservice's user");
        Ok(())
    }

    /// `appservice register`: adds the registration `text` describes.
    pub fn register_appservice(&self, text: &str) -> crate::Result<Arc<Appservice>> {
        let appservice = self
            .appservices
            .register(&self.db, text)
            .map_err(crate::Error::invalid_param)?;
        self.ensure_appservice_sender(&appservice)?;
        tracing::info!(appservice = appservice.id(), "registered an appservice");
        Ok(appservice)
    }

    /// `appservice unregister`: removes a registration made by a command.
    pub fn unregister_appservice(&self, id: &str) -> crate::Result<()> {
        self.appservices
            .unregister(&self.db, id)
            .map_err(crate::Error::invalid_param)?;
        tracing::info!(appservice = id, "unregistered an appservice");
        Ok(())
    }

    /// `M_EXCLUSIVE` when an appservice claims `user_id` exclusively and
    /// `by` is not that appservice.
    pub fn check_user_namespace(
        &self,
        user_id: &UserId,
        by: Option<&Appservice>,
    ) -> crate::Result<()> {
        match self.appservices.registry().exclusive_owner_of_user(user_id) {
            Some(owner) if by.is_none_or(|by| by.id() != owner.id()) => Err(crate::Error::new(
                crate::ErrorCode::Exclusive,
                "This user ID is reserved by an application service.",
            )),
            _ => Ok(()),
        }
    }

    /// `M_EXCLUSIVE` when an appservice claims `alias` exclusively and
    /// `sender` is not one of its users.
    pub fn check_alias_namespace(&self, alias: &str, sender: &UserId) -> crate::Result<()> {
        match self.appservices.registry().exclusive_owner_of_alias(alias) {
            Some(owner) if !owner.is_user(sender) => Err(crate::Error::new(
                crate::ErrorCode::Exclusive,
                "This alias is reserved by an application service.",
            )),
            _ => Ok(()),
        }
    }
}

/// A registration file's text.
pub fn parse_registration(text: &str) -> Result<Registration, String> {
    serde_norway::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRIDGE: &str = r##"
id: "irc"
url: "http://127.0.0.1:9999"
as_token: "as-secret"
hs_token: "hs-secret"
sender_localpart: "ircbot"
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: "@_irc_.*:example.org"
  aliases:
    - exclusive: false
      regex: "#_irc_.*:example.org"
  rooms: []
"##;

    #[test]
    fn a_registration_claims_its_namespaces_whole() {
        let appservice =
            Appservice::new(parse_registration(BRIDGE).unwrap(), "example.org").unwrap();
        let user = |u: &str| UserId::parse(u).unwrap();
        assert!(appservice.is_user(&user("@ircbot:example.org")));
        assert!(appservice.claims_user_exclusively(&user("@_irc_alice:example.org")));
        // Whole ids only: a match inside another id is no match.
        assert!(!appservice.is_user(&user("@x_irc_alice:example.org")));
        assert!(!appservice.is_user(&user("@_irc_alice:example.org.evil")));
        assert!(appservice.is_alias("#_irc_chan:example.org"));
        assert!(!appservice.claims_alias_exclusively("#_irc_chan:example.org"));
        assert_eq!(appservice.registration.rate_limited, Some(false));
    }

    #[test]
    fn bad_registrations_say_why() {
        assert!(parse_registration("id: x\n").is_err());
        let same_tokens = BRIDGE.replace("hs-secret", "as-secret");
        let error =
            Appservice::new(parse_registration(&same_tokens).unwrap(), "example.org").unwrap_err();
        assert!(error.contains("must differ"));
        let bad_regex = BRIDGE.replace("@_irc_.*:example.org", "@_irc_(:example.org");
        let error =
            Appservice::new(parse_registration(&bad_regex).unwrap(), "example.org").unwrap_err();
        assert!(error.contains("not a regex"));
        let all = Registry::default()
            .with(Appservice::new(parse_registration(BRIDGE).unwrap(), "example.org").unwrap())
            .unwrap();
        let again = Appservice::new(parse_registration(BRIDGE).unwrap(), "example.org").unwrap();
        assert!(all.with(again).unwrap_err().contains("already"));
    }
}
