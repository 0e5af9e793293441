//! Joining a room that lives on other servers: `make_join` for a template,
//! the event filled, hashed and signed here, `send_join` for the room's
//! state and auth chain, every event of which is verified and checked
//! before the room appears on this server. Also remote alias look-ups.

use conduit_state_res::check_against_state;
use ruma::{OwnedServerName, RoomVersionId, ServerName, UserId};
use serde_json::Value as JsonValue;

use super::incoming::{
    RoomContext,
    outliers::{RawEvents, parse_raw_events},
};
use crate::{
    Error, ErrorCode, Result, Services,
    rooms::{
        membership::Change,
        relations::RelationRows,
        timeline::{Append, RoomHead, RoomRecord},
    },
};

/// A join's answer carries the whole room state: about 1 KB a member, so
/// this takes rooms of well over 100,000 members and refuses an answer
/// that would only exhaust memory.
const SEND_JOIN_LIMIT: usize = 160 << 20;

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
        if let Some(invite) = self.remote_invite(user, room_id)? {
            for server in invite.via.into_iter().rev() {
                if !servers.contains(&server) {
                    servers.insert(0, server);
                }
            }
        }
        if let Some(room) = self.rooms.room(room_id)? {
            // A room we left: its last known servers may let us back.
            servers.extend(self.servers_in_room(&room)?.iter().cloned());
            servers.dedup();
        }
        if servers.is_empty() {
            return Err(Error::not_found(
                "This server is not in the room and knows no server to join it through.",
            ));
        }
        let mut last_error = None;
        for server in servers {
            let progress = self.federation.joins.start(room_id, server.as_str());
            let _cancelled = self.federation.joins.guard(progress);
            let outcome = self
                .join_via(&server, room_id, user, reason, progress)
                .await;
            self.federation.joins.end(
                progress,
                outcome.as_ref().map(|_| ()).map_err(ToString::to_string),
            );
            match outcome {
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
        progress: u64,
    ) -> Result<()> {
        let mut content = serde_json::Map::new();
        for field in ["displayname", "avatar_url"] {
            if let Some(value) = self.users.profile_field(user, field)? {
                content.insert(field.into(), value);
            }
        }
        if let Some(reason) = reason {
            content.insert("reason".into(), reason.into());
        }
        let signed = self
            .make_membership(server, room_id, user, "join", content)
            .await?;
        self.federation
            .joins
            .phase(progress, "waiting for the room's state (send_join)");
        let bytes = self
            .send_membership(server, room_id, "v2", "join", &signed, SEND_JOIN_LIMIT)
            .await?;
        tracing::info!(room_id, %server, bytes = bytes.len(), "send_join answered");
        let answer = parse_raw_events(server, &bytes)?;
        self.federation.joins.phase(
            progress,
            format!(
                "checking {} state and {} auth chain events ({} MB)",
                answer.state.len(),
                answer.auth_chain.len(),
                bytes.len() >> 20
            ),
        );
        drop(bytes);
        // A restricted join comes back signed by the resident server too:
        // its signature is added to our event, nothing else of its copy.
        let join_event = match &answer.event {
            Some(event) if event.is_object() => super::with_their_signatures(&signed.event, event),
            _ => signed.event.clone(),
        };
        self.finish_join(
            server,
            room_id,
            &signed.version,
            answer,
            &join_event,
            progress,
        )
        .await
    }

    /// Stores what `send_join` answered and appends our join on top of it.
    async fn finish_join(
        &self,
        server: &ServerName,
        room_id: &str,
        version: &str,
        answer: RawEvents,
        join_event: &JsonValue,
        progress: u64,
    ) -> Result<()> {
        // A room new to this server is recorded only once the join passed
        // every check, just before it is appended.
        let known = self.rooms.room(room_id)?;
        let record = match &known {
            Some(record) => record.clone(),
            None => RoomRecord {
                short: self.short_ids.next_id()?,
                version: version.to_owned(),
            },
        };
        let (ours, rules) = crate::rooms::send::version_rules(version)?;
        let room = RoomContext {
            room_id: room_id.to_owned(),
            record: record.clone(),
            version: ours,
            rules,
        };
        let RawEvents {
            state, auth_chain, ..
        } = answer;
        let (state_events, chain_events) = (state.len(), auth_chain.len());
        let mut events = auth_chain;
        events.extend(state);
        let started = std::time::Instant::now();
        let outliers = self.store_outliers(server, &room, events).await?;
        let state = outliers.state(&self.short_ids, chain_events..chain_events + state_events)?;
        tracing::info!(
            room_id,
            %server,
            state_events,
            chain_events,
            accepted = outliers.accepted_count(),
            state = state.len(),
            seconds = started.elapsed().as_secs_f32(),
            "join: the room's state is stored"
        );
        if self.state_event(&state, "m.room.create", "")?.is_none()
            && self.create_event_of(&room)?.is_none()
        {
            return Err(Error::new(
                ErrorCode::Unknown,
                format!("{server} answered the join without the room's create event."),
            )
            .with_status(502));
        }

        self.federation.joins.phase(
            progress,
            format!("storing our join on a state of {}", state.len()),
        );
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
        if known.is_none() {
            self.rooms.insert_room(room_id, &record)?;
        }
        let memberships = self.memberships_of(&state, None, pdu.short)?;
        let appservices = self.appservices_for(room_id, record.short, Some(before_id), &pdu)?;
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
            appservices: &appservices,
            relation: RelationRows::prepare(&self.db, &self.short_ids, record.short, &pdu)?,
            transaction: None,
            // The members of the state the join came with.
            state_memberships: &memberships,
        })?;
        self.metrics.event(true);
        self.wake_pushers(&notifications);
        self.wake_appservices(&appservices);
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
