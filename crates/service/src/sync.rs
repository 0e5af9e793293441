//! `GET /sync`: joined rooms (timeline, state, `limited`, `prev_batch`),
//! invites with their stripped state, leaves, account data, presence, the
//! device's to-device messages and key counts, whose devices changed, and
//! a long-poll woken by new events. A token is
//! the server-wide event position; the work grows with the user's rooms and
//! what changed in them, not with the server.

use std::{collections::HashMap, time::Duration};

use conduit_state_res::ShortEventId;
use ruma::UserId;
use serde_json::{Map, Value as JsonValue, json};

use crate::e2ee::device_lists::UserRoom;
use crate::federation::invite::stripped;
use crate::{
    Result, Services,
    rooms::{membership::membership_of, messages::EventFilter, pdu::Pdu, timeline::RoomRecord},
};

/// What a sync asks for.
pub struct SyncRequest {
    /// The syncing device: its to-device messages and key counts.
    pub device_id: ruma::OwnedDeviceId,
    pub since: Option<u64>,
    pub full_state: bool,
    pub timeout: Duration,
    pub timeline_limit: usize,
    pub timeline_filter: EventFilter,
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    /// `set_presence`: `None` for `offline` (the sync does not touch presence).
    pub set_presence: Option<String>,
    /// The room state filter's event fields.
    pub state_filter: EventFilter,
    /// `lazy_load_members` in the room state filter.
    pub lazy_load_members: bool,
    /// Matrix 1.16 `use_state_after`: `state_after` replaces `state`.
    pub use_state_after: bool,
    /// Unread counts per thread (`unread_thread_notifications` in the filter).
    pub unread_by_thread: bool,
}

/// A room's timeline rows for one sync.
pub(crate) struct TimelineRows {
    pub rows: Vec<(u64, ShortEventId)>,
    /// Position of the first row (the `prev_batch`), or the end when empty.
    pub start: u64,
    pub limited: bool,
}

/// One look at what changed for a user.
struct Pass {
    response: JsonValue,
    /// Whether the response has anything new.
    changed: bool,
    /// The short ids of the rooms it looked at: what a waiting long-poll
    /// watches.
    rooms: Vec<u64>,
}

/// Where a joined room's timeline sits, for its state section.
struct RoomWindow<'a> {
    timeline_start: u64,
    timeline: &'a [Pdu],
    whole_state: bool,
    limited: bool,
}

/// The key of the state section: `state_after` when the client asks for it.
fn state_field(use_state_after: bool) -> &'static str {
    if use_state_after {
        "state_after"
    } else {
        "state"
    }
}

/// What a sync shows of one joined room besides its timeline and state.
#[derive(Default)]
struct RoomExtras {
    account_data: Vec<JsonValue>,
}

/// Stripped state shown with an invite or a knock.
pub(crate) const INVITE_STATE: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

impl Services {
    pub async fn sync(&self, user_id: &UserId, request: &SyncRequest) -> Result<JsonValue> {
        if let Some(state) = &request.set_presence {
            self.presence_from_sync(user_id, state)?;
        }
        let mut positions = self.stream.subscribe();
        let deadline = tokio::time::Instant::now() + request.timeout;
        let mut next = self.stream.position();
        loop {
            let pass = self.sync_once(user_id, request, next)?;
            if request.since.is_none() || request.full_state || pass.changed {
                return Ok(pass.response);
            }
            // Nothing new for this user: wait for the next change anywhere.
            // Changes elsewhere wake every waiting sync; memory says whether
            // one could concern this user before the database is read.
            let looked_up_to = next;
            loop {
                let wait = tokio::time::timeout_at(deadline, positions.changed()).await;
                next = self.stream.position();
                if !matches!(wait, Ok(Ok(()))) {
                    return Ok(self.sync_once(user_id, request, next)?.response);
                }
                if self
                    .stream
                    .may_concern(user_id.as_str(), &pass.rooms, looked_up_to)
                {
                    break;
                }
            }
        }
    }

    fn sync_once(&self, user_id: &UserId, request: &SyncRequest, next: u64) -> Result<Pass> {
        let since = request.since.unwrap_or(0);
        // Account data: everything on the first sync, what changed after.
        let mut global_data = Vec::new();
        let mut room_extras: HashMap<String, RoomExtras> = HashMap::new();
        if request.since.is_none() {
            for (kind, content) in self.account_data.global(user_id)? {
                global_data.push(json!({ "type": kind, "content": content }));
            }
        } else {
            for change in self.account_data.changed(user_id, since, next)? {
                let event = json!({ "type": change.event_type, "content": change.content });
                match change.room_id {
                    Some(room_id) => room_extras
                        .entry(room_id)
                        .or_default()
                        .account_data
                        .push(event),
                    None => global_data.push(event),
                }
            }
        }

        let mut join = Map::new();
        let mut invite = Map::new();
        let mut leave = Map::new();
        let mut knock = Map::new();
        let mut rooms = Vec::new();
        let mut all_rooms = Vec::new();
        for (room_id, membership) in self.rooms.user_rooms(user_id.as_str())? {
            let wanted = request.rooms.as_ref().is_none_or(|r| r.contains(&room_id))
                && !request.not_rooms.contains(&room_id);
            let extras = room_extras.remove(&room_id);
            let Some(room) = self.rooms.room(&room_id)? else {
                // An invite from another server to a room we are not in, or
                // a knock on one.
                if wanted
                    && let Some(remote) = self.remote_invite(user_id, &room_id)?
                    && (request.since.is_none() || remote.position >= since)
                {
                    match membership.as_str() {
                        "invite" => {
                            let mut events = remote.invite_state;
                            events.push(stripped(&remote.event));
                            invite.insert(room_id, json!({ "invite_state": { "events": events } }));
                        }
                        "knock" => {
                            let mut events = remote.invite_state;
                            events.push(stripped(&remote.event));
                            knock.insert(room_id, json!({ "knock_state": { "events": events } }));
                        }
                        "leave" if request.since.is_some() => {
                            let events: Vec<JsonValue> = remote
                                .event
                                .is_object()
                                .then_some(remote.event)
                                .into_iter()
                                .collect();
                            leave.insert(
                                room_id,
                                json!({
                                    "timeline": { "events": events, "limited": false },
                                    "state": { "events": [] },
                                }),
                            );
                        }
                        _ => {}
                    }
                }
                continue;
            };
            all_rooms.push(UserRoom {
                id: room_id.clone(),
                short: room.short,
                joined: membership == "join",
            });
            if !wanted {
                continue;
            }
            rooms.push(room.short);
            // Quiet rooms cost one lookup in memory.
            if request.since.is_some()
                && !request.full_state
                && extras.is_none()
                && !self.stream.room_changed_since(room.short, since)
            {
                continue;
            }
            match membership.as_str() {
                "join" => {
                    let extras = match extras {
                        Some(extras) => extras,
                        None if request.since.is_none() => RoomExtras {
                            account_data: self
                                .account_data
                                .in_room(user_id, &room_id)?
                                .into_iter()
                                .map(|(kind, content)| json!({ "type": kind, "content": content }))
                                .collect(),
                        },
                        None => RoomExtras::default(),
                    };
                    if let Some(joined) =
                        self.joined_room(user_id, &room, request, since, next, extras)?
                    {
                        join.insert(room_id, joined);
                    }
                }
                "invite" => {
                    if let Some(events) = self.stripped_room(user_id, &room, since)? {
                        invite.insert(room_id, json!({ "invite_state": { "events": events } }));
                    }
                }
                "knock" => {
                    if let Some(events) = self.stripped_room(user_id, &room, since)? {
                        knock.insert(room_id, json!({ "knock_state": { "events": events } }));
                    }
                }
                _ if request.since.is_some() => {
                    if let Some(member) = self.own_member_event(user_id, &room)?
                        && self.count_of(&member)? >= since
                    {
                        let left = self.left_room(user_id, &room, request, since, &member)?;
                        leave.insert(room_id, left);
                    }
                }
                _ => {}
            }
        }
        let presence = self.presence_events(user_id, request.since, next)?;
        let device = &request.device_id;
        let to_device = self.to_device_for_sync(user_id, device, request.since, next)?;
        let device_lists = match request.since {
            Some(since) => self.device_list_news_in(user_id, &all_rooms, since, next)?,
            None => Default::default(),
        };
        let key_counts = self.reported_key_counts(user_id, device)?;
        let changed = !join.is_empty()
            || !invite.is_empty()
            || !leave.is_empty()
            || !knock.is_empty()
            || !global_data.is_empty()
            || !presence.is_empty()
            || !to_device.is_empty()
            || !device_lists.is_empty();
        let response = json!({
            "next_batch": next.to_string(),
            "rooms": { "join": join, "invite": invite, "leave": leave, "knock": knock },
            "account_data": { "events": global_data },
            "presence": { "events": presence },
            "to_device": { "events": to_device },
            "device_lists": { "changed": device_lists.changed, "left": device_lists.left },
            "device_one_time_keys_count": key_counts,
            "device_unused_fallback_key_types": self.unused_fallback_key_types(user_id, device)?,
        });
        Ok(Pass {
            response,
            changed,
            rooms,
        })
    }

    pub(crate) fn count_of(&self, pdu: &Pdu) -> Result<u64> {
        Ok(self.rooms.meta(pdu.short)?.map_or(0, |m| m.count))
    }

    pub(crate) fn own_member_event(
        &self,
        user_id: &UserId,
        room: &RoomRecord,
    ) -> Result<Option<Pdu>> {
        let state = self.current_state(room)?;
        self.state_event(&state, "m.room.member", user_id.as_str())
    }

    fn joined_room(
        &self,
        user_id: &UserId,
        room: &RoomRecord,
        request: &SyncRequest,
        since: u64,
        next: u64,
        extras: RoomExtras,
    ) -> Result<Option<JsonValue>> {
        let rows = self.timeline_rows(room, request.timeline_limit, since, next)?;
        let joined_since = request.since.is_some()
            && match self.own_member_event(user_id, room)? {
                Some(member) if self.count_of(&member)? >= since => {
                    // Joined since the token, not merely a new display name.
                    let before = self.state_at(room, since)?;
                    self.state_event(&before, "m.room.member", user_id.as_str())?
                        .is_none_or(|m| membership_of(&m) != "join")
                }
                _ => false,
            };
        let whole_state = request.since.is_none() || request.full_state || joined_since;
        let ephemeral = self.ephemeral(user_id, room.short, request.since, next)?;
        if rows.rows.is_empty()
            && !whole_state
            && ephemeral.is_empty()
            && extras.account_data.is_empty()
        {
            return Ok(None);
        }
        let (timeline_start, limited) = (rows.start, rows.limited);
        let timeline_events =
            self.timeline_events(user_id, &request.timeline_filter, &rows, true, None)?;
        let state = self.sync_state(
            user_id,
            room,
            request,
            since,
            next,
            RoomWindow {
                timeline_start,
                timeline: &timeline_events,
                whole_state,
                limited,
            },
        )?;
        let mut timeline = Vec::with_capacity(timeline_events.len());
        for pdu in &timeline_events {
            timeline.push(self.serve_event(user_id, pdu)?);
        }
        let unread = self.unread_counts(user_id, room.short, request.unread_by_thread)?;
        let summary = self.sync_summary(user_id, room)?;
        let mut joined = json!({
            "summary": summary,
            "timeline": { "events": timeline, "limited": limited, "prev_batch": timeline_start.to_string() },
            state_field(request.use_state_after): { "events": state },
            "ephemeral": { "events": ephemeral },
            "account_data": { "events": extras.account_data },
            "unread_notifications": {
                "notification_count": unread.main.0,
                "highlight_count": unread.main.1,
            },
        });
        if request.unread_by_thread {
            let threads: Map<String, JsonValue> = unread
                .threads
                .into_iter()
                .map(|(root, (notes, highlights))| {
                    (
                        root,
                        json!({ "notification_count": notes, "highlight_count": highlights }),
                    )
                })
                .collect();
            joined["unread_thread_notifications"] = threads.into();
        }
        Ok(Some(joined))
    }

    /// A joined room's `summary`: member counts from the room's member
    /// summary, and for a room with neither name nor alias the heroes a
    /// client names it after (up to five other joined or invited members,
    /// in the order they came).
    fn sync_summary(&self, user_id: &UserId, room: &RoomRecord) -> Result<JsonValue> {
        let Some(snapshot) = self.rooms.head(room.short)?.state else {
            return Ok(json!({}));
        };
        let members = self.member_summary(room.short, snapshot)?;
        let mut summary = json!({
            "m.joined_member_count": members.joined,
            "m.invited_member_count": members.invited,
        });
        let state = self.state_snapshots.load(snapshot)?;
        if self.room_name(&state)?.is_none()
            && self
                .state_text(&state, "m.room.canonical_alias", "alias")?
                .is_none()
        {
            summary["m.heroes"] = self.heroes(user_id, &state)?.into();
        }
        Ok(summary)
    }

    /// A room's name, when it has a non-empty one.
    pub(crate) fn room_name(&self, state: &conduit_state_res::StateMap) -> Result<Option<String>> {
        Ok(self
            .state_text(state, "m.room.name", "name")?
            .filter(|n| !n.is_empty()))
    }

    /// The members a nameless room is called after: up to five other
    /// joined or invited members, in the order they came.
    pub(crate) fn heroes(
        &self,
        user_id: &UserId,
        state: &conduit_state_res::StateMap,
    ) -> Result<Vec<String>> {
        let mut heroes = Vec::new();
        for (&key, &event) in state.iter() {
            let (kind, member) = self.short_ids.state_key(key)?;
            if kind != "m.room.member" || member == user_id.as_str() {
                continue;
            }
            if let Some(pdu) = self.rooms.pdu(event, &self.short_ids)?
                && matches!(membership_of(&pdu), "join" | "invite")
            {
                heroes.push((event, member));
            }
        }
        heroes.sort();
        Ok(heroes.into_iter().take(5).map(|(_, m)| m).collect())
    }

    /// The newest `limit + 1` timeline rows before `end`: those at or after
    /// `since` form the timeline, one more means it was cut.
    pub(crate) fn timeline_rows(
        &self,
        room: &RoomRecord,
        limit: usize,
        since: u64,
        end: u64,
    ) -> Result<TimelineRows> {
        let limit = limit.max(1);
        let mut rows = self.rooms.page(room.short, end, false, limit + 1)?;
        rows.retain(|(count, _)| *count >= since);
        let limited = rows.len() > limit;
        rows.truncate(limit);
        rows.reverse();
        Ok(TimelineRows {
            start: rows.first().map_or(end, |(count, _)| *count),
            rows,
            limited,
        })
    }

    /// The events of timeline rows that pass the filter and that the user
    /// may see (`always` passes their own leave event).
    pub(crate) fn timeline_events(
        &self,
        user_id: &UserId,
        filter: &EventFilter,
        rows: &TimelineRows,
        joined_now: bool,
        always: Option<ShortEventId>,
    ) -> Result<Vec<Pdu>> {
        let mut events = Vec::with_capacity(rows.rows.len());
        for (_, short) in &rows.rows {
            if let Some(pdu) = self.rooms.pdu(*short, &self.short_ids)?
                && filter.keeps(&pdu)
                && (always == Some(*short) || self.may_see(user_id, joined_now, &pdu)?)
            {
                events.push(pdu);
            }
        }
        Ok(events)
    }

    /// A room left (or banned from) since the token: the timeline up to
    /// and including the leave, and the state that goes with it.
    fn left_room(
        &self,
        user_id: &UserId,
        room: &RoomRecord,
        request: &SyncRequest,
        since: u64,
        leave: &Pdu,
    ) -> Result<JsonValue> {
        let end = self.count_of(leave)? + 1;
        let rows = self.timeline_rows(room, request.timeline_limit, since, end)?;
        let timeline = self.timeline_events(
            user_id,
            &request.timeline_filter,
            &rows,
            false,
            Some(leave.short),
        )?;
        let state = self.sync_state(
            user_id,
            room,
            request,
            since,
            end,
            RoomWindow {
                timeline_start: rows.start,
                timeline: &timeline,
                whole_state: false,
                limited: rows.limited,
            },
        )?;
        let events = timeline
            .iter()
            .map(|pdu| self.serve_event(user_id, pdu))
            .collect::<Result<Vec<_>>>()?;
        Ok(json!({
            "timeline": { "events": events, "limited": rows.limited, "prev_batch": rows.start.to_string() },
            state_field(request.use_state_after): { "events": state },
            "account_data": { "events": [] },
        }))
    }

    /// The `state` (or, with `use_state_after`, `state_after`) section of a
    /// joined room:
    /// - `state`: the state at the start of the timeline — all of it on a
    ///   first sync, what changed since the token after a gap, else nothing;
    /// - `state_after`: the state at the end of the timeline — all of it,
    ///   or what changed since the token (timeline state events included).
    ///
    /// With `lazy_load_members`, member events are only those of the
    /// timeline's senders and the user's own.
    fn sync_state(
        &self,
        user_id: &UserId,
        room: &RoomRecord,
        request: &SyncRequest,
        since: u64,
        next: u64,
        window: RoomWindow<'_>,
    ) -> Result<Vec<JsonValue>> {
        let at = if request.use_state_after {
            next
        } else {
            window.timeline_start
        };
        let base = self.state_at(room, at)?;
        let mut entries: Vec<(u64, ShortEventId)> = if window.whole_state {
            base.iter().map(|(k, e)| (*k, *e)).collect()
        } else if window.limited || request.use_state_after {
            let before = self.state_at(room, since)?;
            base.iter()
                .filter(|(key, event)| before.get(key) != Some(event))
                .map(|(k, e)| (*k, *e))
                .collect()
        } else {
            Vec::new()
        };
        let mut wanted: Vec<&str> = window.timeline.iter().map(|e| e.sender.as_str()).collect();
        wanted.push(user_id.as_str());
        if request.lazy_load_members {
            // Member events are told apart by their state key, so a big
            // room's thousands of them are never read.
            let mut kept = Vec::with_capacity(entries.len());
            for (key, event) in entries {
                let (kind, state_key) = self.short_ids.state_key(key)?;
                if kind != "m.room.member" || wanted.contains(&state_key.as_str()) {
                    kept.push((key, event));
                }
            }
            entries = kept;
        }
        let mut events: Vec<ShortEventId> = entries.into_iter().map(|(_, e)| e).collect();
        if request.lazy_load_members {
            // The senders' member events the client may not have yet
            // (unless the timeline itself carries them).
            for sender in wanted {
                if let Some(key) = self.short_ids.state_key_short("m.room.member", sender)?
                    && let Some(&member) = base.get(&key)
                    && !events.contains(&member)
                    && (request.use_state_after
                        || !window.timeline.iter().any(|e| e.short == member))
                {
                    events.push(member);
                }
            }
        }
        let mut state = Vec::with_capacity(events.len());
        for short in events {
            if let Some(pdu) = self.rooms.pdu(short, &self.short_ids)?
                && request.state_filter.keeps(&pdu)
            {
                state.push(pdu.to_client_event());
            }
        }
        Ok(state)
    }

    /// A joined room's ephemeral events: who types (when that changed, or
    /// anyone types on a first sync) and the receipts since the token.
    fn ephemeral(
        &self,
        user_id: &UserId,
        room: u64,
        since: Option<u64>,
        next: u64,
    ) -> Result<Vec<JsonValue>> {
        let mut events = Vec::new();
        let (typing, changed_at) = self.typing.in_room(room);
        let typing_news = match since {
            Some(since) => changed_at >= since,
            None => !typing.is_empty(),
        };
        if typing_news {
            events.push(json!({ "type": "m.typing", "content": { "user_ids": typing } }));
        }
        if let Some(receipts) = self.receipt_event(user_id, room, since.unwrap_or(0), next)? {
            events.push(receipts);
        }
        Ok(events)
    }

    /// The stripped state an invitee or knocker sees, with their own member
    /// event; `None` when that membership is older than `since`.
    pub(crate) fn stripped_room(
        &self,
        user_id: &UserId,
        room: &RoomRecord,
        since: u64,
    ) -> Result<Option<Vec<JsonValue>>> {
        let state = self.current_state(room)?;
        let Some(member) = self.state_event(&state, "m.room.member", user_id.as_str())? else {
            return Ok(None);
        };
        if self.count_of(&member)? < since {
            return Ok(None);
        }
        let mut events = Vec::new();
        for kind in INVITE_STATE {
            if let Some(pdu) = self.state_event(&state, kind, "")? {
                events.push(stripped(&pdu.json));
            }
        }
        events.push(stripped(&member.json));
        Ok(Some(events))
    }
}
