//! Local events: build the PDU (prev events = forward extremities, auth
//! events from the current state, depth), hash and sign it, run the auth
//! rules of `crates/state-res`, then append it. A refused event writes
//! nothing and answers `403 M_FORBIDDEN` with the rule that refused it.

use conduit_state_res::{
    RoomVersion, auth_types_for_event, check_against_state, check_auth_events,
};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, RoomVersionId, UserId,
    room_version_rules::RoomVersionRules,
};
use serde_json::{Value as JsonValue, json};

use super::{
    pdu::Pdu,
    relations::RelationRows,
    timeline::{Append, RoomHead, RoomRecord},
};
use crate::{Error, Result, Services, utils};

/// The most prev events a new event cites.
const MAX_PREV_EVENTS: usize = 10;
/// The largest integer canonical JSON allows, the ceiling of depths.
pub(crate) const MAX_DEPTH: u64 = (1 << 53) - 1;

/// An event a local user asks to send.
pub struct NewEvent<'a> {
    pub kind: &'a str,
    pub state_key: Option<&'a str>,
    pub content: JsonValue,
}

/// A client's transaction: the same `(user, device, txn id)` sends once.
pub struct Transaction<'a> {
    pub user_id: &'a UserId,
    pub device_id: &'a str,
    pub txn_id: &'a str,
}

pub(crate) fn version_rules(version: &str) -> Result<(&'static RoomVersion, RoomVersionRules)> {
    let ours = RoomVersion::from_id(version)
        .ok_or_else(|| Error::internal(format!("unknown room version {version}")))?;
    let rules = RoomVersionId::try_from(version)
        .ok()
        .and_then(|id| id.rules())
        .ok_or_else(|| Error::internal(format!("no rules for room version {version}")))?;
    Ok((ours, rules))
}

impl Services {
    /// Sends an event into a room this server knows, as `sender`.
    pub async fn send_local_event(
        &self,
        room_id: &str,
        sender: &UserId,
        event: NewEvent<'_>,
    ) -> Result<Pdu> {
        Ok(self.append_new_event(room_id, sender, event, None).await?.0)
    }

    /// Sends an event for a client request; a transaction id seen before
    /// gives back the event it made, without sending again. A command in
    /// the admin room gets the bot's answer.
    pub async fn send_event(
        &self,
        room_id: &str,
        sender: &UserId,
        event: NewEvent<'_>,
        txn: Option<Transaction<'_>>,
    ) -> Result<Pdu> {
        let (pdu, new) = self.append_new_event(room_id, sender, event, txn).await?;
        // A retried transaction does not run its command again.
        if new && let Err(e) = self.handle_admin_message(&pdu).await {
            tracing::warn!(event_id = pdu.event_id, "admin command failed: {e}");
        }
        Ok(pdu)
    }

    /// Sends an event under the room's lock (once per transaction id);
    /// whether it is new (not a transaction seen before).
    async fn append_new_event(
        &self,
        room_id: &str,
        sender: &UserId,
        event: NewEvent<'_>,
        txn: Option<Transaction<'_>>,
    ) -> Result<(Pdu, bool)> {
        let room = self
            .rooms
            .room(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room."))?;
        let _lock = self.rooms.lock(room.short).await;
        // A transaction id answers only for the same kind of send in the
        // same room: a client reusing one elsewhere (another room, a
        // redaction after a message) sends anew.
        if let Some(txn) = &txn
            && let Some(event_id) = self.rooms.transaction(txn)?
            && let Some(pdu) = self.rooms.pdu_by_id(&event_id, &self.short_ids)?
            && pdu.kind == event.kind
            && self
                .rooms
                .meta(pdu.short)?
                .is_some_and(|m| m.room == room.short)
        {
            return Ok((pdu, false));
        }
        // A room whose server ACL denies this server takes nothing more
        // from it but its users' leaves (the other servers would drop it).
        let leaving = event.kind == "m.room.member"
            && event.state_key == Some(sender.as_str())
            && event.content.get("membership").and_then(JsonValue::as_str) == Some("leave");
        if !leaving {
            self.check_server_acl(&room, &self.config.server_name)
                .map_err(|_| Error::forbidden("The room's server ACL denies this server."))?;
        }
        self.check_annotation(sender, event.kind, &event.content)?;
        let head = self.rooms.head(room.short)?;
        let pdu = self
            .build_check_append(room_id, &room, &head, sender, event, txn.as_ref())
            .await?;
        Ok((pdu, true))
    }

    /// The power levels and creators in force in a room now.
    pub fn room_power(
        &self,
        room: &RoomRecord,
    ) -> Result<conduit_state_res::power_levels::RoomPower> {
        let (version, _) = version_rules(&room.version)?;
        let state = self.current_state(room)?;
        let create = self.state_event(&state, "m.room.create", "")?;
        let levels = self.state_event(&state, "m.room.power_levels", "")?;
        Ok(conduit_state_res::power_levels::RoomPower::new(
            create.as_ref(),
            levels.as_ref(),
            version,
        ))
    }

    /// Builds, signs, checks and appends one event (with the transaction
    /// that sent it, if any); the caller holds the room's lock.
    pub(crate) async fn build_check_append(
        &self,
        room_id: &str,
        room: &RoomRecord,
        head: &RoomHead,
        sender: &UserId,
        event: NewEvent<'_>,
        transaction: Option<&Transaction<'_>>,
    ) -> Result<Pdu> {
        let (pdu, state) = self.build_checked_event(room_id, room, head, sender, event)?;
        self.append_local_event(room_id, room, head, &state, pdu, transaction)
            .await
    }

    /// Builds and signs one event and checks it against the auth rules;
    /// returns it with the state it was checked against (the current one).
    pub(crate) fn build_checked_event(
        &self,
        room_id: &str,
        room: &RoomRecord,
        head: &RoomHead,
        sender: &UserId,
        event: NewEvent<'_>,
    ) -> Result<(Pdu, std::sync::Arc<conduit_state_res::StateMap>)> {
        let (version, rules) = version_rules(&room.version)?;
        let state = self.rooms.state_map(&self.state_snapshots, head)?;
        let lookup = |kind: &str, key: &str| self.state_event(&state, kind, key).ok().flatten();
        let (object, auth_events) =
            self.event_template(room_id, version, head, &state, sender, event)?;
        let (event_id, json) = self.hash_sign_and_name(object, &rules)?;
        let short = self.short_ids.get_or_create_event_short(&event_id)?;
        let pdu = Pdu::from_json(short, json, &self.short_ids)?;

        let create = lookup("m.room.create", "");
        check_auth_events(version, &pdu, &auth_events, create.as_ref())
            .and_then(|()| check_against_state(version, &pdu, &lookup))
            .map_err(|rejection| Error::forbidden(format!("Not allowed: {rejection}.")))?;
        Ok((pdu, state))
    }

    /// Appends a checked local event on top of `head` (whose state is
    /// `state`) and queues it for the room's other servers.
    pub(crate) async fn append_local_event(
        &self,
        room_id: &str,
        room: &RoomRecord,
        head: &RoomHead,
        state: &std::sync::Arc<conduit_state_res::StateMap>,
        pdu: Pdu,
        transaction: Option<&Transaction<'_>>,
    ) -> Result<Pdu> {
        let new_state = match pdu.state_key.as_deref() {
            Some(key) => {
                let mut next = (**state).clone();
                next.insert(
                    self.short_ids
                        .get_or_create_state_key_short(&pdu.kind, key)?,
                    pdu.short,
                );
                Some(
                    self.state_snapshots
                        .save(&self.short_ids, &next, head.state)?,
                )
            }
            None => None,
        };
        let room_id = pdu.room_id.as_deref().unwrap_or(room_id);
        let notifications = self
            .notifications_for(room_id, room, head.state, state, &pdu)
            .await?;
        let destinations = self.destinations_for(room.short, new_state.or(head.state), &pdu)?;
        let appservices = self.appservices_for(room_id, room.short, head.state, &pdu)?;
        self.rooms.append(Append {
            room_id,
            room,
            state_before: head.state,
            next_head: RoomHead {
                state: new_state.or(head.state),
                extremities: vec![pdu.short],
                depth: pdu.depth,
            },
            pdu: &pdu,
            destinations: &destinations,
            notifications: &notifications,
            appservices: &appservices,
            relation: RelationRows::prepare(&self.db, &self.short_ids, room.short, &pdu)?,
            transaction,
            state_memberships: &[],
        })?;
        self.metrics.event(true);
        self.wake_pushers(&notifications);
        self.wake_appservices(&appservices);
        for destination in &destinations {
            self.wake_sender(destination);
        }
        Ok(pdu)
    }

    /// An event not yet hashed or signed: prev events (the forward
    /// extremities), auth events chosen from `state`, depth, and the
    /// version's format. Also what `make_join` hands out. Returns the
    /// object and its auth events.
    pub(crate) fn event_template(
        &self,
        room_id: &str,
        version: &RoomVersion,
        head: &RoomHead,
        state: &conduit_state_res::StateMap,
        sender: &UserId,
        event: NewEvent<'_>,
    ) -> Result<(JsonValue, Vec<Pdu>)> {
        let lookup = |kind: &str, key: &str| self.state_event(state, kind, key).ok().flatten();

        let mut auth_events = Vec::new();
        for (kind, key) in auth_types_for_event(
            version,
            event.kind,
            sender.as_str(),
            event.state_key,
            &event.content,
        ) {
            if let Some(pdu) = lookup(&kind, &key) {
                auth_events.push(pdu);
            }
        }
        // The newest forward extremities, at most as many as the spec lets
        // an event cite (a fork of many heads merges over several events).
        let mut prev_ids = Vec::new();
        let newest = head.extremities.len().saturating_sub(MAX_PREV_EVENTS);
        for &short in &head.extremities[newest..] {
            if let Some(id) = self.short_ids.event_id(short)? {
                prev_ids.push(id);
            }
        }

        let mut object = json!({
            "room_id": room_id,
            "sender": sender,
            "type": event.kind,
            "content": event.content,
            "origin_server_ts": utils::now_ms(),
            // Remote events may claim any depth up to canonical JSON's
            // largest integer; ours must stay below it.
            "depth": head.depth.saturating_add(1).min(MAX_DEPTH),
            "prev_events": prev_ids,
            "auth_events": auth_events.iter().map(|a| a.event_id.as_str()).collect::<Vec<_>>(),
        });
        if let Some(key) = event.state_key {
            object["state_key"] = key.into();
        }
        // Redactions name their target in `content.redacts` from v11 on,
        // at the top level before: callers always give it in the content.
        if event.kind == "m.room.redaction"
            && version.redaction < conduit_state_res::room_version::RedactionRules::V11
            && let Some(target) = object["content"]
                .as_object_mut()
                .and_then(|c| c.remove("redacts"))
        {
            object["redacts"] = target;
        }
        if version.room_id_is_create_event && event.kind == "m.room.create" {
            object.as_object_mut().expect("object").remove("room_id");
        }
        // Rooms of versions 1 and 2 (other servers' old rooms): events name
        // themselves, and cite others as `[id, {"sha256": reference hash}]`.
        if version.event_format == conduit_state_res::room_version::EventFormat::V1 {
            let (_, rules) = version_rules(version.id)?;
            object["event_id"] =
                format!("${}:{}", utils::random_string(18), self.config.server_name).into();
            let cite = |ids: Vec<String>| -> Result<JsonValue> {
                let mut pairs = Vec::with_capacity(ids.len());
                for id in ids {
                    let hash = self.reference_hash_of(&id, &rules)?;
                    pairs.push(json!([id, { "sha256": hash }]));
                }
                Ok(JsonValue::Array(pairs))
            };
            object["prev_events"] = cite(prev_ids)?;
            object["auth_events"] = cite(auth_events.iter().map(|a| a.event_id.clone()).collect())?;
        }
        Ok((object, auth_events))
    }

    /// The reference hash of a stored event, as rooms of versions 1 and 2
    /// cite it.
    fn reference_hash_of(&self, event_id: &str, rules: &RoomVersionRules) -> Result<String> {
        let pdu = self
            .rooms
            .pdu_by_id(event_id, &self.short_ids)?
            .ok_or_else(|| Error::internal(format!("cited event {event_id} is not stored")))?;
        let object: CanonicalJsonObject =
            serde_json::from_value(pdu.json.clone()).map_err(Error::internal)?;
        ruma::signatures::reference_hash(&object, rules).map_err(Error::internal)
    }

    /// Adds the content hash and our signature, and names the event by its
    /// reference hash (room versions 3 and later). Returns the id and the
    /// JSON to store (with `event_id`, which clients read).
    fn hash_sign_and_name(
        &self,
        object: JsonValue,
        rules: &RoomVersionRules,
    ) -> Result<(String, JsonValue)> {
        let CanonicalJsonValue::Object(mut object) =
            CanonicalJsonValue::try_from(object).map_err(|e| Error::bad_json(e.to_string()))?
        else {
            return Err(Error::internal("event is not an object"));
        };
        self.server_keys
            .hash_and_sign_event(&mut object, &rules.redaction)?;
        let event_id = match object.get("event_id") {
            // Versions 1 and 2: the id the template chose.
            Some(CanonicalJsonValue::String(id)) => id.clone(),
            _ => {
                let hash = ruma::signatures::reference_hash(&object, rules)
                    .map_err(|e| Error::bad_json(e.to_string()))?;
                format!("${hash}")
            }
        };
        object.insert(
            "event_id".into(),
            CanonicalJsonValue::String(event_id.clone()),
        );
        let json =
            serde_json::to_value(CanonicalJsonObject::from(object)).map_err(Error::internal)?;
        Ok((event_id, json))
    }
}
