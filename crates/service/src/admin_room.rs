//! The admin room: a private room of the server's bot (`@conduit`) that
//! server admins are joined to. A message starting with `!admin` from an
//! admin runs the admin command set (the one `conduit admin` runs) and the
//! bot answers in the room, as Conduit's admin room does.

use ruma::{OwnedUserId, UserId};
use serde_json::{Value as JsonValue, json};

use crate::{
    Error, Result, Services,
    admin_commands::AdminCommand,
    rooms::{
        create::{NewRoom, Preset},
        membership::Change,
        pdu::Pdu,
        send::NewEvent,
    },
    tables,
};

/// The bot's localpart.
pub const BOT_LOCALPART: &str = "conduit";
/// Where the admin room's id is kept in the `global` table.
const ADMIN_ROOM_KEY: &str = "admin_room";
/// Set in the `global` table when the server made its bot, so an account
/// of that name made some other way is never taken for it.
const BOT_KEY: &str = "bot_user";
/// The prefix of a command message.
const PREFIX: &str = "!admin";

/// Splits a command line into words; double or single quotes keep spaces
/// (`--note "book club"`).
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("A quote is not closed.".into());
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

impl Services {
    pub fn bot_user(&self) -> Result<OwnedUserId> {
        UserId::parse(format!("@{BOT_LOCALPART}:{}", self.config.server_name))
            .map_err(Error::internal)
    }

    /// The admin room's id, once it exists.
    pub fn admin_room(&self) -> Result<Option<String>> {
        Ok(self
            .db
            .get(&tables::GLOBAL_JSON, ADMIN_ROOM_KEY)?
            .and_then(|v| v.as_str().map(str::to_owned)))
    }

    /// Puts a new admin in the admin room: makes the bot and the room the
    /// first time, then invites and joins the admin.
    pub async fn join_admin_room(&self, admin: &UserId) -> Result<String> {
        let bot = self.bot_user()?;
        let made_by_us = self.db.get(&tables::GLOBAL_JSON, BOT_KEY)?.is_some();
        if !made_by_us {
            if self.users.exists(&bot)? {
                return Err(Error::internal(format!(
                    "{bot} exists but is not the server's bot: no admin room"
                )));
            }
            self.users.create(&bot, None, false, |batch, _| {
                batch.put(&tables::GLOBAL_JSON, BOT_KEY, &json!(bot.as_str()))?;
                Ok(batch.put(
                    &tables::PROFILES,
                    (bot.as_str(), "displayname"),
                    &json!("Conduit"),
                )?)
            })?;
        }
        let room_id = match self.admin_room()? {
            Some(room_id) => room_id,
            None => {
                let mut new = NewRoom::simple(Preset::PrivateChat);
                new.name = Some("Server admins");
                new.topic = Some("Server administration: type !admin --help");
                let room_id = self.create_room(&bot, new).await?;
                let mut batch = self.db.batch();
                batch.put(&tables::GLOBAL_JSON, ADMIN_ROOM_KEY, &json!(room_id))?;
                self.db.write(batch)?;
                room_id
            }
        };
        if self.rooms.membership(admin.as_str(), &room_id)? != "join" {
            self.change_membership(&room_id, &bot, admin, Change::Invite, None)
                .await?;
            self.change_membership(&room_id, admin, admin, Change::Join, None)
                .await?;
        }
        Ok(room_id)
    }

    /// Joins a new admin to the admin room; a failure is logged, not the
    /// registration's (the account exists either way).
    pub(crate) async fn welcome_admin(&self, admin: &UserId) {
        match self.join_admin_room(admin).await {
            Ok(room) => tracing::info!(%admin, room, "the new admin joined the admin room"),
            Err(e) => tracing::error!(%admin, "cannot put the new admin in the admin room: {e}"),
        }
    }

    /// Runs the command in a message of the admin room, if it is one from
    /// an admin, and answers as the bot. Anything else is left alone.
    pub async fn handle_admin_message(&self, pdu: &Pdu) -> Result<()> {
        let Some(body) = pdu.content.get("body").and_then(JsonValue::as_str) else {
            return Ok(());
        };
        let Some(rest) = body.strip_prefix(PREFIX) else {
            return Ok(());
        };
        if pdu.kind != "m.room.message"
            || pdu.sender.starts_with(&format!("@{BOT_LOCALPART}:"))
            || !(rest.is_empty() || rest.starts_with(char::is_whitespace))
            || pdu.room_id.is_none()
            || pdu.room_id != self.admin_room()?
        {
            return Ok(());
        }
        let sender = UserId::parse(pdu.sender.as_str()).map_err(Error::internal)?;
        let is_admin = self.users.account(&sender)?.is_some_and(|a| a.is_admin);
        let answer = if !is_admin {
            "Only server admins may run admin commands.".to_owned()
        } else {
            match command_words(rest)
                .and_then(|words| AdminCommand::parse(words).map_err(|(_, text)| text))
            {
                Ok(command) => self
                    .run_admin_command(command, sender.as_str())
                    .unwrap_or_else(|e| format!("Error: {e}")),
                Err(text) => text,
            }
        };
        let bot = self.bot_user()?;
        self.send_local_event(
            pdu.room_id.as_deref().unwrap_or_default(),
            &bot,
            NewEvent {
                kind: "m.room.message",
                state_key: None,
                content: json!({
                    "msgtype": "m.notice",
                    "body": answer,
                    "format": "org.matrix.custom.html",
                    "formatted_body": format!("<pre><code>{}</code></pre>", html_escape(&answer)),
                    "m.relates_to": { "m.in_reply_to": { "event_id": pdu.event_id } },
                }),
            },
        )
        .await?;
        Ok(())
    }
}

/// The words of a command message: its first line split into words, and
/// for `appservice register` the lines after it as one word (the
/// registration, in a code block or not).
fn command_words(rest: &str) -> Result<Vec<String>, String> {
    let (line, more) = rest.split_once('\n').unwrap_or((rest, ""));
    let mut words = split_words(line)?;
    if words.len() == 2 && words[0] == "appservice" && words[1] == "register" {
        let text = more.trim();
        let text = text
            .strip_prefix("```")
            .map(|t| t.split_once('\n').map_or("", |(_, body)| body))
            .and_then(|t| t.trim_end().strip_suffix("```"))
            .map_or(text, str::trim);
        words.push(text.to_owned());
    }
    Ok(words)
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_with_quotes() {
        assert_eq!(
            split_words(r#" token create --note "book club" --uses 2 "#).unwrap(),
            ["token", "create", "--note", "book club", "--uses", "2"]
        );
        assert_eq!(split_words("a 'b c' \"\"").unwrap(), ["a", "b c", ""]);
        assert!(split_words("a \"b").is_err());
    }

    #[test]
    fn a_registration_follows_its_command() {
        let words =
            command_words(" appservice register\n```yaml\nid: x\nurl: null\n```\n").unwrap();
        assert_eq!(words, ["appservice", "register", "id: x\nurl: null"]);
        let words = command_words(" appservice register\nid: y\n").unwrap();
        assert_eq!(words[2], "id: y");
    }
}
