//! Knocking across servers (room versions 7 and later): a user of ours
//! knocks on a room elsewhere through `make_knock` / `send_knock`, and the
//! room's stripped state waits with the knock until someone lets them in
//! (an invite, which arrives as one); users of other servers knock on our
//! rooms the same way.

use ruma::{OwnedServerName, ServerName, UserId};
use serde_json::{Value as JsonValue, json};

use super::{
    client::FedError,
    invite::{RemoteInvite, stripped},
};
use crate::{Error, Result, Services, rooms::membership::Change};

impl Services {
    /// Knocks on a room: locally when a user of ours is in it, else
    /// through the first of `via` (and the room id's server) that takes it.
    pub async fn knock_room(
        &self,
        room_id: &str,
        user: &UserId,
        via: &[OwnedServerName],
        reason: Option<&str>,
    ) -> Result<()> {
        if self.is_resident(room_id)? {
            self.change_membership(room_id, user, user, Change::Knock, reason)
                .await?;
            return Ok(());
        }
        let servers = self.candidate_servers(room_id, via);
        let mut last_error = Error::not_found(
            "This server is not in the room and knows no server to knock through.",
        );
        for server in servers {
            match self.knock_via(&server, room_id, user, reason).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::info!(%server, room_id, "knock through this server failed: {e}");
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }

    async fn knock_via(
        &self,
        server: &ServerName,
        room_id: &str,
        user: &UserId,
        reason: Option<&str>,
    ) -> Result<()> {
        let mut content = serde_json::Map::new();
        if let Some(reason) = reason {
            content.insert("reason".into(), reason.into());
        }
        let signed = self
            .make_membership(server, room_id, user, "knock", content)
            .await?;
        let answer: JsonValue = serde_json::from_slice(
            &self
                .send_membership(server, room_id, "v1", "knock", &signed, 1 << 20)
                .await?,
        )
        .map_err(|e| FedError::NotJson(e.to_string()).into_client_error(server))?;
        let knock_state = answer
            .get("knock_room_state")
            .and_then(JsonValue::as_array)
            .map(|list| list.iter().take(50).map(stripped).collect())
            .unwrap_or_default();
        let mut event = signed.event;
        event["event_id"] = signed.event_id.into();
        self.store_remote_membership(
            user,
            room_id,
            "knock",
            RemoteInvite {
                event,
                room_version: signed.version,
                invite_state: knock_state,
                position: 0,
                via: vec![server.to_owned()],
            },
        )
    }

    /// `GET /make_knock/{roomId}/{userId}`: a knock template for a user of
    /// `origin`, if the room's version and join rule take knocks.
    pub fn make_knock(
        &self,
        origin: &ServerName,
        room_id: &str,
        user_id: &UserId,
        versions: &[String],
    ) -> Result<JsonValue> {
        self.membership_template(origin, room_id, user_id, versions, "knock")
    }

    /// `PUT /v1/send_knock/{roomId}/{eventId}`: takes a signed knock of a
    /// user of `origin`; answers with the room's stripped state.
    pub async fn send_knock(
        &self,
        origin: &ServerName,
        room_id: &str,
        event_id: &str,
        raw: &JsonValue,
    ) -> Result<JsonValue> {
        let taken = self
            .take_membership(origin, room_id, event_id, raw, "knock")
            .await?;
        let state = self.current_state(&taken.room.record)?;
        Ok(json!({ "knock_room_state": self.stripped_state(&state)? }))
    }
}
