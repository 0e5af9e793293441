//! The admin command set, one for every front: `conduit admin ...` on the
//! command line (through the running server's admin socket, or on the
//! database of a stopped one) and, later, `!admin ...` in the admin room.
//! Commands are parsed by clap from words and answer with text.

use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::{
    Error, Result, Services,
    registration_tokens::{NewToken, TokenUpdate, TokenView},
    utils,
};

/// `conduit admin ...`: what admins do.
#[derive(Debug, Parser)]
#[command(name = "admin", no_binary_name = true, disable_help_subcommand = true)]
pub struct AdminCommand {
    #[command(subcommand)]
    pub command: Admin,
}

#[derive(Debug, Subcommand)]
pub enum Admin {
    /// Registration tokens: create, list, show, update, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Users: server-admin rights, single sign-on identities.
    #[command(subcommand)]
    User(UserCommand),
    /// Media: look at it, list a user's uploads, quarantine, delete.
    #[command(subcommand)]
    Media(MediaCommand),
    /// Rooms: how far remote joins are.
    #[command(subcommand)]
    Rooms(RoomsCommand),
    /// Application services (bridges, bots): register, list, unregister.
    #[command(subcommand)]
    Appservice(AppserviceCommand),
    /// Make a registration token for inviting people (one use, a week, by
    /// default) and print it.
    Invite {
        /// How many accounts it may create.
        #[arg(long, default_value_t = 1)]
        uses: u64,
        /// How long it stays valid, e.g. `7d`, `12h`, `30m`.
        #[arg(long, default_value = "7d", value_parser = parse_duration)]
        expires: Duration,
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Make a local user a server admin (the admin API and `!admin`
    /// commands open to them; invite them to the admin room from there).
    MakeAdmin { user: String },
    /// Take a user's server-admin rights away.
    RevokeAdmin { user: String },
    /// List the single sign-on identities that log in to a user.
    Identities { user: String },
    /// Remove a user's identities at one single sign-on provider (they no
    /// longer log in to this account; a new sign-in there is a new identity).
    Unlink { user: String, provider: String },
}

#[derive(Debug, Subcommand)]
pub enum AppserviceCommand {
    /// Register an appservice: its registration YAML (`conduit admin` reads
    /// it from the file named; in the admin room it follows the command,
    /// in a code block).
    Register { registration: String },
    /// The registered appservices and what waits for each.
    List,
    /// Remove an appservice registered by `register` (those of
    /// `appservice_registration_files` go by editing the config).
    Unregister { id: String },
}

#[derive(Debug, Subcommand)]
pub enum RoomsCommand {
    /// Remote joins in progress (their phase and time so far) and the last
    /// ones finished (running server only: kept in memory).
    JoinStatus,
}

#[derive(Debug, Subcommand)]
pub enum MediaCommand {
    /// What is known of one media URI (`mxc://server/id`).
    Show { uri: String },
    /// A local user's uploads, newest first.
    List {
        user: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Serve the media to nobody (it stays stored).
    Quarantine { uri: String },
    /// Serve quarantined media again.
    Unquarantine { uri: String },
    /// Delete the media and its thumbnails (the file goes once nothing else
    /// uses it).
    Delete { uri: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token: random (`--length`, 16 by default) or given (`--token`).
    Create {
        /// How many accounts it may create (unlimited without).
        #[arg(long)]
        uses: Option<u64>,
        /// How long it stays valid, e.g. `7d`, `12h` (never expires without).
        #[arg(long, value_parser = parse_duration)]
        expires: Option<Duration>,
        #[arg(long, conflicts_with = "token")]
        length: Option<usize>,
        /// The token itself: [A-Za-z0-9._~-], at most 64 characters.
        #[arg(long)]
        token: Option<String>,
        /// A note for admins: who it is for.
        #[arg(long)]
        note: Option<String>,
    },
    /// List tokens: the valid ones (default) or all.
    List {
        #[arg(long, conflicts_with = "all")]
        valid: bool,
        #[arg(long)]
        all: bool,
    },
    /// Show one token.
    Show { token: String },
    /// Change a token's uses, expiry or note.
    Update {
        token: String,
        #[arg(long, conflicts_with = "unlimited")]
        uses: Option<u64>,
        /// Remove the limit on uses.
        #[arg(long)]
        unlimited: bool,
        /// A new expiry, counted from now.
        #[arg(long, value_parser = parse_duration, conflicts_with = "never")]
        expires: Option<Duration>,
        /// Remove the expiry.
        #[arg(long)]
        never: bool,
        #[arg(long)]
        note: Option<String>,
    },
    /// Revoke a token: it stays listed but opens nothing any more.
    Revoke { token: String },
}

/// `7d`, `12h`, `30m`, `45s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 7d, 12h, 30m or 45s"))?;
    let seconds = match unit {
        "d" => n.checked_mul(86_400),
        "h" => n.checked_mul(3_600),
        "m" => n.checked_mul(60),
        "s" | "" => Some(n),
        _ => None,
    }
    .ok_or_else(|| format!("{text:?} is not a duration like 7d, 12h, 30m or 45s"))?;
    Ok(Duration::from_secs(seconds))
}

impl AdminCommand {
    /// Parses words (`["token", "create", "--uses", "1"]`); a parse error
    /// or `--help` comes back as the text to show, with whether it is help
    /// (asked for, not an error).
    pub fn parse<I, T>(words: I) -> Result<Self, (bool, String)>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(words).map_err(|e| {
            let help = matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            (help, e.render().to_string())
        })
    }
}

fn expiry(expires: Duration) -> u64 {
    utils::now_ms().saturating_add(u64::try_from(expires.as_millis()).unwrap_or(u64::MAX))
}

/// One token as a line for people.
fn describe(view: &TokenView) -> String {
    let r = &view.record;
    let now = utils::now_ms();
    let uses = match r.uses_allowed {
        Some(allowed) => format!("{}/{allowed} used", r.completed),
        None => format!("{} used, unlimited", r.completed),
    };
    let expiry = match r.expiry_time {
        Some(t) if t <= now => "expired".to_owned(),
        Some(t) => format!("expires in {}", human((t - now) / 1000)),
        None => "never expires".to_owned(),
    };
    let mut line = format!("{}  {uses}, {} pending, {expiry}", r.token, view.pending);
    if r.revoked {
        line.push_str(", revoked");
    }
    if !view.is_valid(now) {
        line.push_str(" (not valid)");
    }
    if let Some(by) = &r.created_by {
        line.push_str(&format!(", by {by}"));
    }
    if let Some(note) = &r.note {
        line.push_str(&format!(" — {note}"));
    }
    line
}

fn human(seconds: u64) -> String {
    match seconds {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3_600),
        s if s >= 3_600 => format!("{}h {}m", s / 3_600, s % 3_600 / 60),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl Services {
    fn run_user_command(&self, command: UserCommand) -> Result<String> {
        let (UserCommand::MakeAdmin { user }
        | UserCommand::RevokeAdmin { user }
        | UserCommand::Identities { user }
        | UserCommand::Unlink { user, .. }) = &command;
        let user_id = self
            .users
            .resolve_login_name(user)
            .ok_or_else(|| Error::not_found(format!("No such local user: {user}")))?;
        if user_id.localpart() == crate::admin_room::BOT_LOCALPART {
            return Err(Error::forbidden("The server's bot is not a person."));
        }
        if !self.users.exists(&user_id)? {
            return Err(Error::not_found(format!("No such user: {user_id}")));
        }
        match command {
            UserCommand::MakeAdmin { .. } => {
                self.users.set_admin(&user_id, true)?;
                Ok(format!("{user_id} is now a server admin."))
            }
            UserCommand::RevokeAdmin { .. } => {
                self.users.set_admin(&user_id, false)?;
                Ok(format!("{user_id} is no longer a server admin."))
            }
            UserCommand::Identities { .. } => {
                let identities = self.sso_identities_of(&user_id)?;
                if identities.is_empty() {
                    return Ok(format!("{user_id} has no single sign-on identities."));
                }
                Ok(identities
                    .iter()
                    .map(|(provider, subject)| format!("{provider} {subject}"))
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
            UserCommand::Unlink { provider, .. } => match self.sso_unlink(&user_id, &provider)? {
                0 => Err(Error::not_found(format!(
                    "{user_id} has no identity at provider {provider}."
                ))),
                n => Ok(format!(
                    "Unlinked {n} identit{} of {user_id} at {provider}.",
                    if n == 1 { "y" } else { "ies" }
                )),
            },
        }
    }

    fn run_appservice_command(&self, command: AppserviceCommand) -> Result<String> {
        match command {
            AppserviceCommand::Register { registration } => {
                let appservice = self.register_appservice(&registration)?;
                Ok(format!(
                    "Registered the appservice {:?}; it acts as {}.",
                    appservice.id(),
                    appservice.sender
                ))
            }
            AppserviceCommand::Unregister { id } => {
                self.unregister_appservice(&id)?;
                Ok(format!("Unregistered the appservice {id:?}."))
            }
            AppserviceCommand::List => {
                let registry = self.appservices.registry();
                if registry.all().is_empty() {
                    return Ok("No appservice is registered.".to_owned());
                }
                let mut lines = Vec::new();
                for appservice in registry.all() {
                    let from = match self.appservices.source(appservice.id()) {
                        Some(crate::appservice::Source::File) => "from the config",
                        _ => "registered by command",
                    };
                    lines.push(format!(
                        "{}: {}, {}, {from}, {} events queued",
                        appservice.id(),
                        appservice.sender,
                        appservice.registration.url.as_deref().unwrap_or("no url"),
                        self.appservice_queue_len(appservice.id())?,
                    ));
                }
                Ok(lines.join("\n"))
            }
        }
    }

    fn run_media_command(&self, command: MediaCommand, by: &str) -> Result<String> {
        let parse = |uri: &str| -> Result<(String, String)> {
            let rest = uri.strip_prefix("mxc://").unwrap_or(uri);
            match rest.split_once('/') {
                Some((server, id)) if !server.is_empty() && !id.is_empty() => {
                    Ok((server.to_owned(), id.to_owned()))
                }
                _ => Err(Error::invalid_param(format!(
                    "{uri:?} is not a media URI like mxc://server/id."
                ))),
            }
        };
        let describe = |server: &str, id: &str, r: &crate::media::MediaRecord| {
            let mut line = format!(
                "mxc://{server}/{id}  {} bytes, {}",
                r.size,
                r.content_type.as_deref().unwrap_or("no type")
            );
            if let Some(name) = &r.file_name {
                line.push_str(&format!(", \"{name}\""));
            }
            match &r.uploader {
                Some(uploader) => line.push_str(&format!(", uploaded by {uploader}")),
                None => line.push_str(", a copy of another server's media"),
            }
            if r.sha256.is_none() {
                line.push_str(", waiting for its file");
            }
            if let Some(admin) = &r.quarantined_by {
                line.push_str(&format!(", quarantined by {admin}"));
            }
            line
        };
        match command {
            MediaCommand::Show { uri } => {
                let (server, id) = parse(&uri)?;
                Ok(describe(&server, &id, &self.media_record(&server, &id)?))
            }
            MediaCommand::List { user, limit } => {
                let user_id = self
                    .users
                    .resolve_login_name(&user)
                    .ok_or_else(|| Error::not_found(format!("No such local user: {user}")))?;
                let (media, total) = self.user_media(&user_id, 0, limit)?;
                let server = self.config.server_name.as_str();
                let mut lines: Vec<String> = media
                    .iter()
                    .map(|m| describe(server, &m.media_id, &m.record))
                    .collect();
                lines.push(format!("{total} uploads in all."));
                Ok(lines.join("\n"))
            }
            MediaCommand::Quarantine { uri } => {
                let (server, id) = parse(&uri)?;
                self.set_media_quarantine(&server, &id, Some(by))?;
                Ok(format!(
                    "mxc://{server}/{id} is quarantined: served to nobody."
                ))
            }
            MediaCommand::Unquarantine { uri } => {
                let (server, id) = parse(&uri)?;
                self.set_media_quarantine(&server, &id, None)?;
                Ok(format!("mxc://{server}/{id} is served again."))
            }
            MediaCommand::Delete { uri } => {
                let (server, id) = parse(&uri)?;
                self.delete_media(&server, &id)?;
                Ok(format!("mxc://{server}/{id} is deleted."))
            }
        }
    }

    /// Runs an admin command; `by` is who asked (a user id, or `cli`).
    pub fn run_admin_command(&self, command: AdminCommand, by: &str) -> Result<String> {
        let tokens = &self.registration_tokens;
        match command.command {
            Admin::User(command) => self.run_user_command(command),
            Admin::Media(command) => self.run_media_command(command, by),
            Admin::Rooms(RoomsCommand::JoinStatus) => Ok(self.federation.joins.describe()),
            Admin::Appservice(command) => self.run_appservice_command(command),
            Admin::Invite {
                uses,
                expires,
                note,
            } => {
                let view = tokens.create(NewToken {
                    uses_allowed: Some(uses),
                    expiry_time: Some(expiry(expires)),
                    created_by: Some(by.to_owned()),
                    note,
                    ..NewToken::default()
                })?;
                Ok(format!(
                    "Invite link: {}\nInvite token for {}: {}\n{}\nThe link's page lets people register without a token-aware client; clients that ask for a registration token take the token.",
                    self.invite_link(&view.record.token),
                    self.config.server_name,
                    view.record.token,
                    describe(&view)
                ))
            }
            Admin::Token(TokenCommand::Create {
                uses,
                expires,
                length,
                token,
                note,
            }) => {
                let view = tokens.create(NewToken {
                    token,
                    length,
                    uses_allowed: uses,
                    expiry_time: expires.map(expiry),
                    created_by: Some(by.to_owned()),
                    note,
                    grants_admin: false,
                })?;
                Ok(describe(&view))
            }
            Admin::Token(TokenCommand::List { all, .. }) => {
                let now = utils::now_ms();
                let lines: Vec<String> = tokens
                    .list()?
                    .iter()
                    .filter(|view| all || view.is_valid(now))
                    .map(describe)
                    .collect();
                Ok(if lines.is_empty() {
                    "No tokens.".to_owned()
                } else {
                    lines.join("\n")
                })
            }
            Admin::Token(TokenCommand::Show { token }) => tokens
                .get(&token)?
                .map(|view| describe(&view))
                .ok_or_else(|| Error::not_found(format!("No such registration token: {token}"))),
            Admin::Token(TokenCommand::Update {
                token,
                uses,
                unlimited,
                expires,
                never,
                note,
            }) => {
                let update = TokenUpdate {
                    uses_allowed: if unlimited {
                        Some(None)
                    } else {
                        uses.map(Some)
                    },
                    expiry_time: if never {
                        Some(None)
                    } else {
                        expires.map(|e| Some(expiry(e)))
                    },
                    note: note.map(Some),
                    revoked: None,
                };
                Ok(describe(&tokens.update(&token, update)?))
            }
            Admin::Token(TokenCommand::Revoke { token }) => {
                let update = TokenUpdate {
                    revoked: Some(true),
                    ..TokenUpdate::default()
                };
                Ok(describe(&tokens.update(&token, update)?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_parsing() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            parse_duration("12h").unwrap(),
            Duration::from_secs(12 * 3_600)
        );
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").is_err() && parse_duration("3w").is_err());
        let parsed =
            AdminCommand::parse(["token", "create", "--uses", "1", "--expires", "2h"]).unwrap();
        assert!(matches!(
            parsed.command,
            Admin::Token(TokenCommand::Create { uses: Some(1), .. })
        ));
        assert!(AdminCommand::parse(["token", "create", "--length", "3", "--token", "x"]).is_err());
        assert!(AdminCommand::parse(["frobnicate"]).is_err());
    }
}
