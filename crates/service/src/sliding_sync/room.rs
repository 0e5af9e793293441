//! One room of a sliding sync answer: everything the first time the
//! connection shows it (`initial`), afterwards only what changed since it
//! was last sent — new timeline events, state changes its
//! `required_state` covers, state it newly asks for, and the name, avatar,
//! heroes and counts when the state behind them changed.

use std::{collections::HashSet, sync::Arc};

use conduit_state_res::{ShortEventId, StateMap};
use ruma::UserId;
use serde_json::{Map, Value as JsonValue, json};

use super::{
    RoomWants, Span, connections::RoomSent, lists::Candidate, required_state::RequiredState,
};
use crate::{
    Result, Services,
    federation::invite::stripped,
    rooms::{membership::membership_of, messages::EventFilter, timeline::RoomRecord},
};

/// What a room's state section holds and what it touched.
struct StateOut {
    events: Vec<ShortEventId>,
    /// The types of the state that changed (or all on a first showing).
    touched: HashSet<String>,
    lazy_members: Arc<HashSet<String>>,
}

impl Services {
    /// The room's entry in an answer (`None` when nothing the client can
    /// see changed) and what to remember of it (`None`: nothing new).
    pub(super) fn sliding_room(
        &self,
        user_id: &UserId,
        candidate: &Candidate,
        wants: &RoomWants,
        previous: Option<&RoomSent>,
        span: Span,
        is_dm: bool,
    ) -> Result<Option<(Option<JsonValue>, RoomSent)>> {
        let Span { since, next } = span;
        let sent = |through| RoomSent {
            through,
            timeline_limit: wants.timeline_limit,
            required_state: Arc::new(wants.required_state.clone()),
            lazy_members: Arc::default(),
        };
        if matches!(candidate.membership.as_str(), "invite" | "knock") {
            let at = candidate.membership_at.unwrap_or(0);
            if previous.is_some_and(|p| p.through > at) {
                return Ok(None);
            }
            let Some(invite_state) = self.invite_state(user_id, candidate)? else {
                return Ok(None);
            };
            let mut room = json!({
                "invite_state": invite_state,
                "bump_stamp": candidate.stamp,
                "initial": true,
            });
            if is_dm {
                room["is_dm"] = true.into();
            }
            return Ok(Some((Some(room), sent(next))));
        }
        let Some(record) = &candidate.record else {
            // A rejected invite to a room of another server: its leave,
            // once.
            if previous.is_some_and(|p| candidate.membership_at.is_some_and(|at| p.through > at)) {
                return Ok(None);
            }
            let leave = self
                .remote_invite(user_id, &candidate.room_id)?
                .map(|r| r.event)
                .filter(JsonValue::is_object);
            let room = json!({
                "timeline": leave.into_iter().collect::<Vec<_>>(),
                "limited": false,
                "bump_stamp": candidate.stamp,
            });
            return Ok(Some((Some(room), sent(next))));
        };
        // A room left or banned from is shown up to that membership.
        let end = match candidate.membership.as_str() {
            "join" => next,
            _ => candidate.membership_at.map_or(next, |at| at + 1),
        };
        let joined_since = match previous {
            Some(p) if candidate.membership == "join" => {
                self.joined_since(user_id, record, p.through)?
            }
            _ => false,
        };
        let initial = previous.is_none() || joined_since;
        let previous = previous.filter(|_| !initial);
        let expanded = previous.is_some_and(|p| wants.timeline_limit > p.timeline_limit);
        let widened = previous.is_some_and(|p| wants.required_state.adds_to(&p.required_state));
        if let Some(p) = previous
            && !expanded
            && !widened
            && (p.through >= end || !self.stream.room_changed_since(record.short, p.through))
        {
            return Ok(None);
        }
        let from = match previous {
            Some(p) if !expanded => p.through,
            _ => 0,
        };

        // Timeline: the newest events since `from`, oldest first.
        let mut timeline = Vec::new();
        let mut fields = Map::new();
        let joined_now = candidate.membership == "join";
        let timeline_events = if wants.timeline_limit > 0 {
            let rows = self.timeline_rows(record, wants.timeline_limit, from, end)?;
            // One's own leave or ban is shown, whatever the visibility.
            let own_membership = rows
                .rows
                .last()
                .filter(|(count, _)| Some(*count) == candidate.membership_at)
                .map(|(_, short)| *short);
            let events = self.timeline_events(
                user_id,
                &EventFilter::default(),
                &rows,
                joined_now,
                own_membership,
            )?;
            let live = match since {
                Some(since) => rows
                    .rows
                    .iter()
                    .filter(|(count, _)| *count >= since)
                    .count(),
                None => 0,
            };
            fields.insert("limited".into(), rows.limited.into());
            fields.insert("prev_batch".into(), rows.start.to_string().into());
            fields.insert("num_live".into(), live.min(events.len()).into());
            events
        } else {
            Vec::new()
        };
        for pdu in &timeline_events {
            timeline.push(self.serve_event(user_id, pdu)?);
        }

        // State: what the config covers, now or changed since last time.
        let now = if joined_now {
            self.current_state(record)?
        } else {
            self.state_at(record, end)?
        };
        let mut mentioned: Vec<&str> = timeline_events.iter().map(|e| e.sender.as_str()).collect();
        mentioned.extend(
            timeline_events
                .iter()
                .filter(|e| e.kind == "m.room.member")
                .filter_map(|e| e.state_key.as_deref()),
        );
        let state =
            self.required_state(record, &now, &wants.required_state, previous, &mentioned)?;
        let mut required_state = Vec::with_capacity(state.events.len());
        for short in &state.events {
            if let Some(pdu) = self.rooms.pdu(*short, &self.short_ids)? {
                required_state.push(pdu.to_client_event());
            }
        }

        // What the room is called and who is in it, when that may differ.
        let touched = |kind: &str| initial || state.touched.contains(kind);
        if touched("m.room.name") || touched("m.room.canonical_alias") || touched("m.room.member") {
            let name = self.room_name(&now)?;
            if let Some(name) = &name {
                fields.insert("name".into(), name.as_str().into());
            }
            if name.is_none() && joined_now {
                fields.insert("heroes".into(), self.hero_profiles(user_id, &now)?.into());
            }
        }
        if touched("m.room.avatar")
            && let Some(url) = self
                .state_text(&now, "m.room.avatar", "url")?
                .filter(|url| !url.is_empty())
        {
            fields.insert("avatar".into(), url.into());
        }
        if joined_now
            && touched("m.room.member")
            && let Some(snapshot) = self.rooms.head(record.short)?.state
        {
            let members = self.member_summary(record.short, snapshot)?;
            fields.insert("joined_count".into(), members.joined.into());
            fields.insert("invited_count".into(), members.invited.into());
        }

        let news = initial
            || expanded
            || !timeline.is_empty()
            || !required_state.is_empty()
            || fields.contains_key("name")
            || fields.contains_key("avatar")
            || fields.contains_key("heroes")
            || fields.contains_key("joined_count");
        let remembered = RoomSent {
            lazy_members: state.lazy_members,
            ..sent(next)
        };
        if !news {
            // Nothing the client can see changed (an event hidden from it,
            // say): remember the look, show nothing.
            return Ok(Some((None, remembered)));
        }
        if initial {
            fields.insert("initial".into(), true.into());
        }
        if expanded {
            fields.insert("unstable_expanded_timeline".into(), true.into());
        }
        if is_dm {
            fields.insert("is_dm".into(), true.into());
        }
        if !timeline.is_empty() {
            fields.insert("timeline".into(), timeline.into());
        }
        if !required_state.is_empty() {
            fields.insert("required_state".into(), required_state.into());
        }
        let unread = self.unread_counts(user_id, record.short, false)?;
        fields.insert("notification_count".into(), unread.main.0.into());
        fields.insert("highlight_count".into(), unread.main.1.into());
        fields.insert("bump_stamp".into(), candidate.stamp.into());
        Ok(Some((Some(fields.into()), remembered)))
    }

    /// Whether the user's join came after `through` (a room the
    /// connection showed while they were invited, or before they left).
    fn joined_since(&self, user_id: &UserId, record: &RoomRecord, through: u64) -> Result<bool> {
        let Some(member) = self.own_member_event(user_id, record)? else {
            return Ok(false);
        };
        if self.count_of(&member)? < through {
            return Ok(false);
        }
        let before = self.state_at(record, through)?;
        Ok(self
            .state_event(&before, "m.room.member", user_id.as_str())?
            .is_none_or(|m| membership_of(&m) != "join"))
    }

    /// The `required_state` of a room: on a first showing the state the
    /// config covers; later the covered state that changed since, plus
    /// what a widened config newly covers. With `$LAZY`, the member events
    /// of `mentioned` users not sent on this connection yet.
    fn required_state(
        &self,
        record: &RoomRecord,
        now: &StateMap,
        config: &RequiredState,
        previous: Option<&RoomSent>,
        mentioned: &[&str],
    ) -> Result<StateOut> {
        let mut lazy_members: HashSet<String> = previous
            .map(|p| (*p.lazy_members).clone())
            .unwrap_or_default();
        let lazy = config.lazy_members && !config.all_members();
        let mut events = Vec::new();
        let mut touched = HashSet::new();
        // A lazily sent member stays wanted: the client keeps it current.
        let wanted = |kind: &str, key: &str| {
            config.wants(kind, key)
                || (lazy && kind == "m.room.member" && lazy_members.contains(key))
        };
        match previous {
            None => {
                events = self.covered_state(now, config)?;
            }
            Some(p) => {
                let before = self.state_at(record, p.through)?;
                for (&key, &event) in now.iter() {
                    if before.get(&key) == Some(&event) {
                        continue;
                    }
                    let (kind, state_key) = self.short_ids.state_key(key)?;
                    if wanted(&kind, &state_key) {
                        events.push(event);
                    }
                    touched.insert(kind);
                }
                if config.adds_to(&p.required_state) {
                    for event in self.covered_state(now, config)? {
                        if !events.contains(&event) {
                            events.push(event);
                        }
                    }
                }
            }
        }
        if lazy {
            for &member in mentioned {
                if lazy_members.contains(member) {
                    continue;
                }
                if let Some(key) = self.short_ids.state_key_short("m.room.member", member)?
                    && let Some(&event) = now.get(&key)
                    && !events.contains(&event)
                {
                    events.push(event);
                }
                lazy_members.insert(member.to_owned());
            }
        }
        Ok(StateOut {
            events,
            touched,
            lazy_members: Arc::new(lazy_members),
        })
    }

    /// The events of `state` a config covers. A config of named keys
    /// looks each up; only wildcards walk the state.
    fn covered_state(&self, state: &StateMap, config: &RequiredState) -> Result<Vec<ShortEventId>> {
        let walk =
            config.all || !config.any_type.is_empty() || config.types.values().any(Option::is_none);
        let mut events = Vec::new();
        if walk {
            for (&key, &event) in state.iter() {
                let (kind, state_key) = self.short_ids.state_key(key)?;
                if config.wants(&kind, &state_key) {
                    events.push(event);
                }
            }
            return Ok(events);
        }
        for (kind, keys) in &config.types {
            for key in keys.iter().flatten() {
                if let Some(short) = self.short_ids.state_key_short(kind, key)?
                    && let Some(&event) = state.get(&short)
                {
                    events.push(event);
                }
            }
        }
        Ok(events)
    }

    /// The heroes of a nameless room with their display names and avatars.
    fn hero_profiles(&self, user_id: &UserId, state: &StateMap) -> Result<Vec<JsonValue>> {
        let mut heroes = Vec::new();
        for hero in self.heroes(user_id, state)? {
            let mut entry = json!({ "user_id": hero });
            if let Some(member) = self.state_event(state, "m.room.member", &hero)? {
                for (field, key) in [("displayname", "displayname"), ("avatar_url", "avatar_url")] {
                    if let Some(value) = member.content.get(key).and_then(JsonValue::as_str) {
                        entry[field] = value.into();
                    }
                }
            }
            heroes.push(entry);
        }
        Ok(heroes)
    }

    /// An invite's or knock's stripped state, with the user's own member
    /// event.
    fn invite_state(
        &self,
        user_id: &UserId,
        candidate: &Candidate,
    ) -> Result<Option<Vec<JsonValue>>> {
        match &candidate.record {
            Some(record) => self.stripped_room(user_id, record, 0),
            None => Ok(self
                .remote_invite(user_id, &candidate.room_id)?
                .map(|remote| {
                    let mut events = remote.invite_state;
                    events.push(stripped(&remote.event));
                    events
                })),
        }
    }
}
