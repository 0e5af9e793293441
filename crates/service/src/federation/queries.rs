//! Queries of other servers on behalf of clients: room aliases
//! (`/query/directory`), profiles (`/query/profile`) and room directories
//! (`/publicRooms`).

use ruma::{OwnedServerName, UserId};
use serde_json::Value as JsonValue;

use super::{client::FedError, incoming::outliers::urlencode};
use crate::{Error, Result, Services};

impl Services {
    /// The room an alias names and servers that are in it: local aliases
    /// from the database, others from their server (`/query/directory`).
    pub async fn resolve_room_alias(&self, alias: &str) -> Result<(String, Vec<OwnedServerName>)> {
        let server = alias
            .split_once(':')
            .and_then(|(_, s)| OwnedServerName::try_from(s).ok())
            .ok_or_else(|| Error::invalid_param("Invalid room alias."))?;
        if server == self.config.server_name {
            let room = self
                .local_alias_asking_appservices(alias)
                .await?
                .ok_or_else(|| Error::not_found("No room has this alias on this server."))?;
            return Ok((room, Vec::new()));
        }
        let path = format!(
            "/_matrix/federation/v1/query/directory?room_alias={}",
            urlencode(alias)
        );
        let answer = self
            .federation_request(&server, http::Method::GET, &path, None, 1 << 20)
            .await
            .map_err(|e| match e {
                FedError::Status { status: 404, .. } => {
                    Error::not_found(format!("{server} knows no room with this alias."))
                }
                other => other.into_client_error(&server),
            })?;
        let room_id = answer
            .get("room_id")
            .and_then(JsonValue::as_str)
            .filter(|id| ruma::RoomId::parse(*id).is_ok())
            .ok_or_else(|| Error::bad_json(format!("{server} answered without a room id.")))?
            .to_owned();
        let mut servers: Vec<OwnedServerName> = answer
            .get("servers")
            .and_then(JsonValue::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(JsonValue::as_str)
                    .filter_map(|s| OwnedServerName::try_from(s).ok())
                    .collect()
            })
            .unwrap_or_default();
        if !servers.contains(&server) {
            servers.insert(0, server);
        }
        Ok((room_id, servers))
    }

    /// A user's profile (or one field of it) from their own server.
    pub async fn remote_profile(
        &self,
        user: &UserId,
        field: Option<&str>,
    ) -> Result<serde_json::Map<String, JsonValue>> {
        let server = user.server_name();
        let mut path = format!(
            "/_matrix/federation/v1/query/profile?user_id={}",
            urlencode(user.as_str())
        );
        if let Some(field) = field {
            path.push_str(&format!("&field={}", urlencode(field)));
        }
        let answer = self
            .federation_request(server, http::Method::GET, &path, None, 1 << 20)
            .await
            .map_err(|e| match e {
                FedError::Status { status: 404, .. } => Error::not_found("Profile not found."),
                other => other.into_client_error(server),
            })?;
        match answer {
            JsonValue::Object(fields) => Ok(fields),
            _ => Err(Error::bad_json(format!(
                "{server} sent a profile that is not an object."
            ))),
        }
    }

    /// Another server's room directory: `body` is what `POST /publicRooms`
    /// takes (`limit`, `since`, `filter`); the answer as that server gave it.
    pub async fn remote_public_rooms(
        &self,
        server: &ruma::ServerName,
        body: &JsonValue,
    ) -> Result<JsonValue> {
        self.federation_request(
            server,
            http::Method::POST,
            "/_matrix/federation/v1/publicRooms",
            Some(body),
            8 << 20,
        )
        .await
        .map_err(|e| e.into_client_error(server))
    }
}
