//! Asking appservices about ids of their namespaces that do not exist
//! yet: a bridge makes rooms (`#irc_#matrix:server`) and puppets on
//! demand when this server asks `GET /_matrix/app/v1/rooms/{alias}` or
//! `/users/{userId}`.

use super::Appservice;
use crate::{Result, Services};

impl Services {
    /// The room a local alias names; when none does and an appservice's
    /// alias namespace holds it, that appservice is asked first.
    pub async fn local_alias_asking_appservices(&self, alias: &str) -> Result<Option<String>> {
        if let Some(room) = self.alias(alias)? {
            return Ok(Some(room));
        }
        let asked = self
            .ask_appservices(
                |a| a.is_alias(alias),
                "rooms",
                alias,
                || Ok(self.alias(alias)?.is_some()),
            )
            .await?;
        if asked { self.alias(alias) } else { Ok(None) }
    }

    /// Whether a local user exists; when not and an appservice's user
    /// namespace holds the id, that appservice is asked first.
    pub async fn local_user_asking_appservices(&self, user_id: &ruma::UserId) -> Result<bool> {
        if self.users.exists(user_id)? {
            return Ok(true);
        }
        if !self.users.is_local(user_id) {
            return Ok(false);
        }
        self.ask_appservices(
            |a| a.is_user(user_id),
            "users",
            user_id.as_str(),
            || self.users.exists(user_id),
        )
        .await
    }

    /// Asks the appservices `claims` picks about `id` (`kind`: `rooms` or
    /// `users`) until one answers 2xx and `made` then says the id exists.
    /// An appservice that is down or says no is only logged.
    async fn ask_appservices(
        &self,
        claims: impl Fn(&Appservice) -> bool,
        kind: &str,
        id: &str,
        made: impl Fn() -> Result<bool>,
    ) -> Result<bool> {
        let registry = self.appservices.registry();
        let path = format!(
            "/_matrix/app/v1/{kind}/{}",
            url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
        );
        for appservice in registry.all().iter().filter(|a| claims(a)) {
            match self
                .call_appservice(appservice, http::Method::GET, &path, None)
                .await
            {
                Ok((status, _)) if status.is_success() && made()? => return Ok(true),
                Ok(_) => {}
                Err(reason) => {
                    tracing::info!(
                        appservice = appservice.id(),
                        id,
                        "{kind} query failed: {reason}"
                    );
                }
            }
        }
        Ok(false)
    }
}
