//! Local room aliases (`#name:server`): create, look up, delete, list.

use conduit_storage::{KeyPrefix, Str};
use ruma::UserId;
use serde::{Deserialize, Serialize};

use crate::{Error, ErrorCode, Result, Services, tables};

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct AliasRecord {
    pub room_id: String,
    pub creator: String,
}

impl Services {
    /// The room an alias of this server points to.
    pub fn alias(&self, alias: &str) -> Result<Option<String>> {
        Ok(self
            .db
            .get(&tables::ALIASES, alias)?
            .map(|record| record.room_id))
    }

    pub(crate) fn put_alias(&self, alias: &str, room_id: &str, creator: &UserId) -> Result<()> {
        let record = AliasRecord {
            room_id: room_id.to_owned(),
            creator: creator.to_string(),
        };
        let mut batch = self.db.batch();
        batch.put(&tables::ALIASES, alias, &record)?;
        batch.put(&tables::ROOM_ALIASES, (room_id, alias), &true)?;
        self.db.write(batch)?;
        Ok(())
    }

    fn local_alias(&self, alias: &str) -> Result<()> {
        let server = alias.split_once(':').map(|(_, s)| s);
        if server == Some(self.config.server_name.as_str()) {
            Ok(())
        } else {
            Err(Error::invalid_param(
                "Aliases of other servers cannot be changed here.",
            ))
        }
    }

    /// `PUT /directory/room/{alias}`: joined members may name a room.
    pub fn create_alias(&self, sender: &UserId, alias: &str, room_id: &str) -> Result<()> {
        self.local_alias(alias)?;
        self.check_alias_namespace(alias, sender)?;
        if self.rooms.room(room_id)?.is_none() {
            return Err(Error::not_found("Unknown room."));
        }
        if self.rooms.membership(sender.as_str(), room_id)? != "join" {
            return Err(Error::forbidden("You are not joined to this room."));
        }
        if self.alias(alias)?.is_some() {
            return Err(
                Error::new(ErrorCode::Unknown, "This alias already exists.").with_status(409)
            );
        }
        self.put_alias(alias, room_id, sender)
    }

    /// `DELETE /directory/room/{alias}`: its creator, or whoever may set the
    /// room's canonical alias.
    pub fn delete_alias(&self, sender: &UserId, alias: &str) -> Result<()> {
        self.local_alias(alias)?;
        let record = self
            .db
            .get(&tables::ALIASES, alias)?
            .ok_or_else(|| Error::not_found("No such alias."))?;
        if record.creator != sender.as_str() {
            let room = self
                .rooms
                .room(&record.room_id)?
                .ok_or_else(|| Error::not_found("Unknown room."))?;
            let power = self.room_power(&room)?;
            if !power.may_send(sender.as_str(), "m.room.canonical_alias", true) {
                return Err(Error::forbidden(
                    "Only the alias's creator or a room moderator may delete it.",
                ));
            }
        }
        let mut batch = self.db.batch();
        batch.delete(&tables::ALIASES, alias)?;
        batch.delete(&tables::ROOM_ALIASES, (record.room_id.as_str(), alias))?;
        self.db.write(batch)?;
        Ok(())
    }

    /// The local aliases of a room.
    pub fn room_aliases(&self, room_id: &str) -> Result<Vec<String>> {
        let prefix = KeyPrefix::new().push::<Str>(room_id);
        self.db
            .scan_prefix(&tables::ROOM_ALIASES, &prefix)?
            .map(|row| Ok(row?.0.1))
            .collect()
    }
}
