//! Joining a room that lives on other servers: `make_join` for a template,
//! the event filled, hashed and signed here, `send_join` for the room's
//! state and auth chain, every event of which is verified and checked
//! before the room appears on this server. Also remote alias look-ups.

use conduit_state_res::{RoomVersion, StateMap, check_against_state};
use ruma::{CanonicalJsonValue, OwnedServerName, RoomVersionId, ServerName, UserId};
use serde_json::Value as JsonValue;

use super::incoming::{RoomContext, outliers::urlencode, parse::parse_pdu};
use crate::{
    Error, ErrorCode, Result, Services,
    rooms::{
        membership::Change,
        relations::RelationRows,
        timeline::{Append, RoomHead, RoomRecord},
    },
    utils,
};

/// A join's answer carries the whole room state: big rooms need room.
const SEND_JOIN_LIMIT: usize = 512 << 20;

/// Every room version this server takes part in.
pub fn supported_versions() -> impl Iterator<Item = &'static str> {
    [
        "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12",
    ]
    .into_iter()
}

impl Services {
    /// Joins `user` to a room: locally when a user of this server is in
    /// it, else through the first of `via` (and the room id's server) that
    /// lets them in.
    pub async fn join_room(
        &self,
        room_id: &str,
        user: &UserId,
        via: &[OwnedServerName],
        reason: Option<&str>,
    ) -> Result<()> {
        if self.is_resident(room_id)? {
            self.change_membership(room_id, user, user, Change::Join, reason)
                .await?;
            return Ok(());
        }
        let mut servers = self.candidate_servers(room_id, via);
        // An invite names the server that knows the room best (v12 room ids
        // name no server at all).
        if let Some(invite) = self.remote_invite(user, room_id)?
            && let Some(sender) = invite.event.get("sender").and_then(JsonValue::as_str)
            && let Some(server) = super::user_server(sender)
            && !servers.iter().any(|s| s == server)
        {
            servers.insert(0, server.to_owned());
        }
        if let Some(room) = self.rooms.room(room_id)? {
            // A room we left: its last known servers may let us back.
            let state = self.current_state(&room)?;
            servers.extend(self.servers_in_state(&state)?);
            servers.dedup();
        }
        if servers.is_empty() {
            return Err(Error::not_found(
                "This server is not in the room and knows no server to join it through.",
            ));
        }
        let mut last_error = None;
        for server in servers {
            match self.join_via(&server, room_id, user, reason).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::info!(%server, room_id, "join through this server failed: {e}");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::not_found("No server could be asked.")))
    }

    /// Whether a user of this server is joined to the room.
    pub fn is_resident(&self, room_id: &str) -> Result<bool> {
        let Some(room) = self.rooms.room(room_id)? else {
            return Ok(false);
        };
        let state = self.current_state(&room)?;
        for (&key, &event) in state.iter() {
            let (kind, state_key) = self.short_ids.state_key(key)?;
            if kind == "m.room.member"
                && super::user_server(&state_key) == Some(self.config.server_name.as_ref())
                && let Some(pdu) = self.rooms.pdu(event, &self.short_ids)?
                && crate::rooms::membership::membership_of(&pdu) == "join"
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn join_via(
        &self,
        server: &ServerName,
        room_id: &str,
        user: &UserId,
        reason: Option<&str>,
    ) -> Result<()> {
        let versions: String = supported_versions().map(|v| format!("&ver={v}")).collect();
        let path = format!(
            "/_matrix/federation/v1/make_join/{}/{}?{}",
            urlencode(room_id),
            urlencode(user.as_str()),
            &versions[1..]
        );
        let template = self
            .federation_request(server, http::Method::GET, &path, None, 1 << 20)
            .await
            .map_err(|e| e.into_client_error(server))?;
        let version = template
            .get("room_version")
            .and_then(JsonValue::as_str)
            .unwrap_or("1")
            .to_owned();
        let (ours, rules) = crate::rooms::send::version_rules(&version).map_err(|_| {
            Error::new(
                ErrorCode::IncompatibleRoomVersion,
                format!("The room's version {version} is not supported by this server."),
            )
        })?;
        let mut event = template
            .get("event")
            .and_then(JsonValue::as_object)
            .cloned()
            .ok_or_else(|| Error::bad_json(format!("{server} sent no join template.")))?;
        if event.get("type").and_then(JsonValue::as_str) != Some("m.room.member")
            || event.get("state_key").and_then(JsonValue::as_str) != Some(user.as_str())
            || event.get("sender").and_then(JsonValue::as_str) != Some(user.as_str())
            || event.get("room_id").and_then(JsonValue::as_str) != Some(room_id)
        {
            return Err(Error::bad_json(format!(
                "{server} sent a join template for something else."
            )));
        }
        for key in ["event_id", "signatures", "hashes", "unsigned"] {
            event.remove(key);
        }
        event.insert("origin".into(), self.config.server_name.as_str().into());
        event.insert("origin_server_ts".into(), utils::now_ms().into());
        let mut content = event
            .get("content")
            .and_then(JsonValue::as_object)
            .cloned()
            .unwrap_or_default();
        content.insert("membership".into(), "join".into());
        for field in ["displayname", "avatar_url"] {
            if let Some(value) = self.users.profile_field(user, field)? {
                content.insert(field.into(), value);
            }
        }
        if let Some(reason) = reason {
            content.insert("reason".into(), reason.into());
        }
        event.insert("content".into(), JsonValue::Object(content));
        if rules.event_format.require_event_id {
            event.insert(
                "event_id".into(),
                format!("${}:{}", utils::random_string(18), self.config.server_name).into(),
            );
        }
        let CanonicalJsonValue::Object(mut object) =
            CanonicalJsonValue::try_from(JsonValue::Object(event))
                .map_err(|e| Error::bad_json(format!("Bad join template: {e}")))?
        else {
            return Err(Error::bad_json("Bad join template."));
        };
        self.server_keys
            .hash_and_sign_event(&mut object, &rules.redaction)?;
        let event_id = match object.get("event_id") {
            Some(CanonicalJsonValue::String(id)) => id.clone(),
            _ => format!(
                "${}",
                ruma::signatures::reference_hash(&object, &rules)
                    .map_err(|e| Error::bad_json(e.to_string()))?
            ),
        };
        let signed = serde_json::to_value(&object).map_err(Error::internal)?;
        let path = format!(
            "/_matrix/federation/v2/send_join/{}/{}",
            urlencode(room_id),
            urlencode(&event_id)
        );
        let answer = self
            .federation_request(
                server,
                http::Method::PUT,
                &path,
                Some(&signed),
                SEND_JOIN_LIMIT,
            )
            .await
            .map_err(|e| e.into_client_error(server))?;
        // A restricted join comes back signed by the resident server too.
        let join_event = match answer.get("event") {
            Some(event) if event.is_object() => event.clone(),
            _ => signed,
        };
        self.finish_join(server, room_id, &version, ours, &answer, &join_event)
            .await
    }

    /// Stores what `send_join` answered and appends our join on top of it.
    async fn finish_join(
        &self,
        server: &ServerName,
        room_id: &str,
        version: &str,
        ours: &'static RoomVersion,
        answer: &JsonValue,
        join_event: &JsonValue,
    ) -> Result<()> {
        let record = match self.rooms.room(room_id)? {
            Some(record) => record,
            None => {
                let record = RoomRecord {
                    short: self.short_ids.next_id()?,
                    version: version.to_owned(),
                };
                self.rooms.insert_room(room_id, &record)?;
                record
            }
        };
        let (_, rules) = crate::rooms::send::version_rules(version)?;
        let room = RoomContext {
            room_id: room_id.to_owned(),
            record: record.clone(),
            version: ours,
            rules,
        };
        let list = |key: &str| {
            answer
                .get(key)
                .and_then(JsonValue::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let state_pdus = list("state");
        let mut events = list("auth_chain");
        events.extend(state_pdus.iter().cloned());
        let accepted = self.store_outliers(&room, &events).await?;

        let mut state = StateMap::new();
        for raw in &state_pdus {
            let Ok(parsed) = parse_pdu(raw, &room.rules) else {
                continue;
            };
            if !accepted.contains(&parsed.event_id) {
                continue;
            }
            if let Some(pdu) = self.rooms.pdu_by_id(&parsed.event_id, &self.short_ids)?
                && let Some(key) = &pdu.state_key
            {
                state.insert(
                    self.short_ids
                        .get_or_create_state_key_short(&pdu.kind, key)?,
                    pdu.short,
                );
            }
        }
        if self.state_event(&state, "m.room.create", "")?.is_none()
            && self.create_event_of(&room)?.is_none()
        {
            return Err(Error::new(
                ErrorCode::Unknown,
                format!("{server} answered the join without the room's create event."),
            )
            .with_status(502));
        }

        let parsed = self.parse_and_verify(&room, join_event).await?;
        let _lock = self.rooms.lock(record.short).await;
        let pdu = self.pdu_from_parsed(&parsed)?;
        if let Err(reason) = self.check_against_auth_events(&room, &pdu)? {
            return Err(Error::forbidden(format!(
                "The join is not allowed: {reason}."
            )));
        }
        let lookup = |kind: &str, key: &str| self.state_event(&state, kind, key).ok().flatten();
        check_against_state(ours, &pdu, &lookup)
            .map_err(|r| Error::forbidden(format!("The join is not allowed: {r}.")))?;

        let before_id = self.state_snapshots.save(&self.short_ids, &state, None)?;
        let mut after = state.clone();
        after.insert(
            self.short_ids.get_or_create_state_key_short(
                "m.room.member",
                pdu.state_key.as_deref().unwrap_or_default(),
            )?,
            pdu.short,
        );
        let after_id = self
            .state_snapshots
            .save(&self.short_ids, &after, Some(before_id))?;
        let notifications = self
            .notifications_for(room_id, &record, Some(before_id), &state, &pdu)
            .await?;
        self.rooms.append(Append {
            room_id,
            room: &record,
            state_before: Some(before_id),
            next_head: RoomHead {
                state: Some(after_id),
                extremities: vec![pdu.short],
                depth: pdu.depth,
            },
            pdu: &pdu,
            destinations: &[],
            notifications: &notifications,
            relation: RelationRows::prepare(&self.db, &self.short_ids, record.short, &pdu)?,
            transaction: None,
        })?;
        if let Ok(user) = <&UserId>::try_from(pdu.sender.as_str()) {
            self.drop_remote_invite(user, room_id)?;
        }
        tracing::info!(room_id, %server, state = state.len(), "joined a room over federation");
        Ok(())
    }
}

/// Whether this server takes part in rooms of `version`.
pub fn is_supported(version: &str) -> bool {
    RoomVersionId::try_from(version).is_ok() && supported_versions().any(|v| v == version)
}
