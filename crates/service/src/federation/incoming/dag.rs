//! Step 4 of a received PDU, under the room's lock: its place in the DAG.
//! Missing prev events are fetched (`/get_missing_events`, bounded), and
//! where a gap remains the state at the missing event comes from `/state`.
//! The state before the event is resolved from its prev events' states;
//! the event is checked against it, then against the current state
//! (soft-fail), and appended: forward extremities and current state move
//! (resolving when the DAG forks).

use std::{pin::Pin, sync::Arc};

use conduit_state_res::{ShortEventId, StateMap, check_against_state};
use ruma::ServerName;
use serde_json::{Value as JsonValue, json};

use super::{Outcome, RoomContext, outliers::urlencode, parse::Parsed};
use crate::{
    Error, Result, Services,
    rooms::{
        pdu::Pdu,
        relations::RelationRows,
        timeline::{Append, EventMeta, RoomHead},
    },
    tables,
};

/// Forward extremities a room keeps at most.
const MAX_EXTREMITIES: usize = 20;

/// Missing events asked for at once with `/get_missing_events`.
const MISSING_EVENTS_LIMIT: u64 = 10;

type Placing<'a> = Pin<Box<dyn Future<Output = Result<Outcome>> + Send + 'a>>;

/// Where a received event goes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Placement {
    /// A new event: on top of the room, moving its head. Missing prev
    /// events were fetched before the lock (`fetch_gap`); what is still
    /// missing gets the state at it from `/state`.
    Live,
    /// History from before the room's earliest local event, at this
    /// timeline position; the room's head does not move.
    Backfill { count: u64 },
}

impl Services {
    /// Places a verified event in the room's DAG.
    pub(crate) fn place_in_dag<'a>(
        &'a self,
        origin: &'a ServerName,
        room: &'a RoomContext,
        parsed: Parsed,
        placement: Placement,
    ) -> Placing<'a> {
        Box::pin(async move {
            if self.event_is_stored(&parsed.event_id)? {
                // Backfill gives outliers (a join's state, say) their place.
                let short = self.short_ids.event_short(&parsed.event_id)?;
                let outlier = match short {
                    Some(short) => self.rooms.meta(short)?.is_none() && !self.is_rejected(short)?,
                    None => false,
                };
                if !(outlier && matches!(placement, Placement::Backfill { .. })) {
                    return Ok(Outcome::AlreadyKnown);
                }
            }
            // Fetched before the lock for `/send`; other callers get it here.
            self.fetch_missing_auth(origin, room, &parsed).await?;
            let pdu = self.pdu_from_parsed(&parsed)?;
            if let Err(reason) = self.check_against_auth_events(room, &pdu)? {
                self.store_refused(&pdu, &tables::REJECTED_EVENTS, &reason, None)?;
                return Ok(Outcome::Rejected(reason));
            }

            let head = self.rooms.head(room.record.short)?;
            let current = self.rooms.state_map(&self.state_snapshots, &head)?;
            // The usual case: the event follows exactly the room's head, so
            // the state before it is the current state, as it is stored.
            let on_head = matches!(placement, Placement::Live)
                && !head.extremities.is_empty()
                && same_events(&pdu.prev_events, &head.extremities);
            let before = if on_head {
                current.clone()
            } else {
                self.resolve_prev_states(origin, room, &pdu).await?
            };

            let lookup =
                |kind: &str, key: &str| self.state_event(&before, kind, key).ok().flatten();
            if let Err(rejection) = check_against_state(room.version, &pdu, &lookup) {
                let reason = rejection.to_string();
                self.store_refused(&pdu, &tables::REJECTED_EVENTS, &reason, None)?;
                return Ok(Outcome::Rejected(reason));
            }

            if let Placement::Backfill { count } = placement {
                self.append_backfilled(room, &pdu, count, &before)?;
                return Ok(Outcome::Accepted);
            }
            if !Arc::ptr_eq(&current, &before) && *current != *before {
                let now =
                    |kind: &str, key: &str| self.state_event(&current, kind, key).ok().flatten();
                if let Err(rejection) = check_against_state(room.version, &pdu, &now) {
                    let reason = rejection.to_string();
                    let before_id = self.save_state(&before, head.state)?;
                    self.store_refused(
                        &pdu,
                        &tables::SOFT_FAILED_EVENTS,
                        &reason,
                        Some(EventMeta {
                            room: room.record.short,
                            count: 0,
                            state_before: Some(before_id),
                        }),
                    )?;
                    return Ok(Outcome::SoftFailed(reason));
                }
            }
            self.append_received(room, &pdu, &head, &current, before)
                .await?;
            Ok(Outcome::Accepted)
        })
    }

    /// The state before an event that does not simply follow the room's
    /// head: its prev events' states (the state at any still missing one
    /// fetched with `/state`), resolved.
    async fn resolve_prev_states(
        &self,
        origin: &ServerName,
        room: &RoomContext,
        pdu: &Pdu,
    ) -> Result<Arc<StateMap>> {
        let missing = self.unplaced_prev_events(pdu)?;
        let mut states = Vec::with_capacity(pdu.prev_events.len());
        for &prev in &pdu.prev_events {
            if missing.contains(&prev) {
                states.push(self.fetch_state_after(origin, room, prev).await?);
            } else if let Some(state) = self.state_after_placed(prev)? {
                states.push(state);
            }
        }
        Ok(self.resolve_states(room.version, &states))
    }

    /// Prev events without a place in the DAG (unknown, or outliers).
    fn unplaced_prev_events(&self, pdu: &Pdu) -> Result<Vec<ShortEventId>> {
        let mut missing = Vec::new();
        for &prev in &pdu.prev_events {
            if self.rooms.meta(prev)?.is_none() {
                missing.push(prev);
            }
        }
        Ok(missing)
    }

    /// Asks `origin` for the events between our forward extremities and
    /// `event_id` (`/get_missing_events`), verified, oldest first: run before
    /// the room's lock, so a slow server holds up no one else's events.
    pub(crate) async fn fetch_gap(
        &self,
        origin: &ServerName,
        room: &RoomContext,
        event_id: &str,
    ) -> Vec<Parsed> {
        let Ok(head) = self.rooms.head(room.record.short) else {
            return Vec::new();
        };
        let earliest: Vec<String> = head
            .extremities
            .iter()
            .filter_map(|&e| self.short_ids.event_id(e).ok().flatten())
            .collect();
        let body = json!({
            "earliest_events": earliest,
            "latest_events": [event_id],
            "limit": MISSING_EVENTS_LIMIT,
            "min_depth": 0,
        });
        let path = format!(
            "/_matrix/federation/v1/get_missing_events/{}",
            urlencode(&room.room_id)
        );
        let answer = match self
            .federation_request(origin, http::Method::POST, &path, Some(&body), 8 << 20)
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                tracing::info!(%origin, event_id, "get_missing_events failed: {e}");
                return Vec::new();
            }
        };
        let mut events: Vec<&JsonValue> = answer
            .get("events")
            .and_then(JsonValue::as_array)
            .map(|list| list.iter().take(MISSING_EVENTS_LIMIT as usize).collect())
            .unwrap_or_default();
        events.sort_by_key(|e| e.get("depth").and_then(JsonValue::as_u64).unwrap_or(0));
        let mut gap = Vec::with_capacity(events.len());
        for raw in events {
            match self.parse_and_verify(room, raw).await {
                Ok(parsed) => gap.push(parsed),
                Err(e) => tracing::info!(%origin, "a missing event was not accepted: {e}"),
            }
        }
        gap
    }

    /// The state after an event we cannot place, from `origin`'s `/state`
    /// at it (the state before it) plus the event itself.
    async fn fetch_state_after(
        &self,
        origin: &ServerName,
        room: &RoomContext,
        prev: ShortEventId,
    ) -> Result<Arc<StateMap>> {
        let prev_id = self
            .short_ids
            .event_id(prev)?
            .ok_or_else(|| Error::internal("prev event without id"))?;
        let path = format!(
            "/_matrix/federation/v1/state/{}?event_id={}",
            urlencode(&room.room_id),
            urlencode(&prev_id)
        );
        let answer = self.federation_events(origin, &path, 256 << 20).await?;
        let mut events = answer.auth_chain;
        let state_range = events.len()..events.len() + answer.pdus.len();
        events.extend(answer.pdus);
        if !self.event_is_stored(&prev_id)? {
            let path = format!("/_matrix/federation/v1/event/{}", urlencode(&prev_id));
            if let Ok(answer) = self.federation_events(origin, &path, 1 << 20).await
                && let Some(pdu) = answer.pdus.into_iter().next()
            {
                events.push(pdu);
            }
        }
        let outliers = self.store_outliers(origin, room, events).await?;
        let mut state = outliers.state(&self.short_ids, state_range)?;
        if !self.is_rejected(prev)?
            && let Some(pdu) = self.rooms.pdu(prev, &self.short_ids)?
            && let Some(key) = &pdu.state_key
        {
            state.insert(
                self.short_ids
                    .get_or_create_state_key_short(&pdu.kind, key)?,
                pdu.short,
            );
        }
        Ok(Arc::new(state))
    }

    /// A state map as a snapshot: `parent` itself when equal, else a diff
    /// against it.
    pub(crate) fn save_state(&self, state: &StateMap, parent: Option<u64>) -> Result<u64> {
        if let Some(parent) = parent
            && *self.state_snapshots.load(parent)? == *state
        {
            return Ok(parent);
        }
        self.state_snapshots.save(&self.short_ids, state, parent)
    }

    /// Stores an event kept out of the timeline, with why (`table` says
    /// rejected or soft-failed) and, for soft-failed ones, their place.
    fn store_refused(
        &self,
        pdu: &Pdu,
        table: &conduit_storage::Table<conduit_storage::U64, conduit_storage::Json<String>>,
        reason: &str,
        meta: Option<EventMeta>,
    ) -> Result<()> {
        tracing::info!(
            event_id = pdu.event_id,
            table = table.name(),
            "event kept out: {reason}"
        );
        let mut batch = self.db.batch();
        batch.put(&tables::PDUS, pdu.short, &pdu.json)?;
        batch.put(table, pdu.short, &reason.to_owned())?;
        if let Some(meta) = meta {
            batch.put(&tables::EVENT_META, pdu.short, &meta)?;
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// Stores a backfilled event at `count`, before the room's earliest
    /// event: its JSON, its place in the timeline and the state before it.
    /// The room's head, sync and unread counts do not change: it is history.
    fn append_backfilled(
        &self,
        room: &RoomContext,
        pdu: &Pdu,
        count: u64,
        before: &StateMap,
    ) -> Result<()> {
        let before_id = self.state_snapshots.save(&self.short_ids, before, None)?;
        let mut batch = self.db.batch();
        batch.put(&tables::PDUS, pdu.short, &pdu.json)?;
        batch.put(&tables::TIMELINE, (room.record.short, count), pdu.short)?;
        batch.put(
            &tables::EVENT_META,
            pdu.short,
            &EventMeta {
                room: room.record.short,
                count,
                state_before: Some(before_id),
            },
        )?;
        self.db.write(batch)?;
        Ok(())
    }

    /// Appends an accepted event: the state before and after it, the new
    /// forward extremities, and the current state (resolved when the DAG
    /// now has several heads).
    async fn append_received(
        &self,
        room: &RoomContext,
        pdu: &Pdu,
        head: &RoomHead,
        current: &Arc<StateMap>,
        before: Arc<StateMap>,
    ) -> Result<()> {
        let before_id = match head.state {
            Some(id) if Arc::ptr_eq(current, &before) => id,
            parent => self.save_state(&before, parent)?,
        };
        let (after, after_id) = match &pdu.state_key {
            Some(key) => {
                let mut after = (*before).clone();
                after.insert(
                    self.short_ids
                        .get_or_create_state_key_short(&pdu.kind, key)?,
                    pdu.short,
                );
                let id = self
                    .state_snapshots
                    .save(&self.short_ids, &after, Some(before_id))?;
                (Arc::new(after), id)
            }
            None => (before.clone(), before_id),
        };
        let mut extremities: Vec<ShortEventId> = head
            .extremities
            .iter()
            .copied()
            .filter(|e| !pdu.prev_events.contains(e))
            .collect();
        extremities.push(pdu.short);
        // A room forked many ways keeps its newest heads: each head costs
        // a state resolution with every event, and the next local event
        // cites them all.
        let excess = extremities.len().saturating_sub(MAX_EXTREMITIES);
        extremities.drain(..excess);
        let mut new_state = after.clone();
        let current_id = if extremities.len() == 1 {
            after_id
        } else {
            let mut states = Vec::with_capacity(extremities.len());
            for &e in &extremities {
                if e == pdu.short {
                    states.push(after.clone());
                } else if let Some(state) = self.state_after_placed(e)? {
                    states.push(state);
                }
            }
            let resolved = self.resolve_states(room.version, &states);
            if *resolved == *after {
                after_id
            } else if *resolved == **current {
                new_state = current.clone();
                head.state.unwrap_or(after_id)
            } else {
                let id = self
                    .state_snapshots
                    .save(&self.short_ids, &resolved, Some(after_id))?;
                new_state = resolved;
                id
            }
        };
        // An event on the head moves the state by itself only; after a gap
        // or a fork, memberships may change by resolution too.
        let memberships = if Arc::ptr_eq(current, &before) && extremities.len() == 1 {
            Vec::new()
        } else {
            self.memberships_of(&new_state, Some(current), pdu.short)?
        };
        let notifications = self
            .notifications_for(&room.room_id, &room.record, Some(before_id), &before, pdu)
            .await?;
        let appservices =
            self.appservices_for(&room.room_id, room.record.short, Some(before_id), pdu)?;
        self.rooms.append(Append {
            room_id: &room.room_id,
            room: &room.record,
            state_before: Some(before_id),
            next_head: RoomHead {
                state: Some(current_id),
                extremities,
                depth: head.depth.max(pdu.depth).min(crate::rooms::send::MAX_DEPTH),
            },
            pdu,
            destinations: &[],
            notifications: &notifications,
            appservices: &appservices,
            relation: RelationRows::prepare(&self.db, &self.short_ids, room.record.short, pdu)?,
            transaction: None,
            state_memberships: &memberships,
        })?;
        self.metrics.event(false);
        self.wake_pushers(&notifications);
        self.wake_appservices(&appservices);
        Ok(())
    }

    /// The memberships `state` holds that `before` does not (all of them
    /// without `before`), but for the event `except`: (user, membership).
    pub(crate) fn memberships_of(
        &self,
        state: &StateMap,
        before: Option<&StateMap>,
        except: ShortEventId,
    ) -> Result<Vec<(String, String)>> {
        let mut memberships = Vec::new();
        for (&key, &event) in state {
            if event == except || before.is_some_and(|b| b.get(&key) == Some(&event)) {
                continue;
            }
            let (kind, user) = self.short_ids.state_key(key)?;
            if kind != "m.room.member" {
                continue;
            }
            if let Some(member) = self.rooms.pdu(event, &self.short_ids)? {
                let membership = crate::rooms::membership::membership_of(&member).to_owned();
                memberships.push((user, membership));
            }
        }
        Ok(memberships)
    }
}

/// Whether two reference lists name the same events, in any order.
fn same_events(a: &[ShortEventId], b: &[ShortEventId]) -> bool {
    a.len() == b.len() && a.iter().all(|e| b.contains(e))
}
