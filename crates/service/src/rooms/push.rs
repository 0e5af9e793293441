//! Push-rule evaluation for unread counts: when an event is appended, each
//! local joined member's push rules decide whether it notifies them (and
//! whether it highlights); the answers are stored with the event, in its
//! batch. Receipts delete what they cover, so a room's unread counts are
//! the rows left.
//!
//! A send must not cost more per member than evaluating that member's
//! rules: the members, their display names and the power levels are built
//! once per room state and cached, the rule sets once per user.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use conduit_state_res::StateMap;
use ruma::{
    OwnedRoomId, OwnedUserId, UInt, UserId,
    events::room::power_levels::{RoomPowerLevels, RoomPowerLevelsSource},
    push::{Action, FlattenedJson, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset},
    serde::Raw,
};
use serde::{Deserialize, Serialize};

use super::{pdu::Pdu, send::version_rules, timeline::RoomRecord};
use crate::{Error, Result, Services, utils};

/// An event that notifies a user, until a receipt covers it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Notification {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub highlight: bool,
    /// The thread root, for events in a thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
}

/// Whom an event notifies, and how.
#[derive(Clone, Debug)]
pub struct Notified {
    pub user: OwnedUserId,
    pub notification: Notification,
    /// The actions of the rule that matched (for `/notifications` and the
    /// tweaks of a push).
    pub actions: Vec<Action>,
    /// Counted in the user's unread counts: a joined member. An invitee is
    /// told (log and pushes) but has no counts in a room they are not in.
    pub counted: bool,
    /// The user's pushers, each of which gets a push.
    pub pushers: Vec<u64>,
}

/// What evaluating the rules of a room's members needs, for one room state.
struct RoomContext {
    snapshot: Option<u64>,
    /// Local joined members and their display names in the room.
    members: Vec<(OwnedUserId, String)>,
    member_count: UInt,
    power_levels: Option<PushConditionPowerLevelsCtx>,
}

#[derive(Default)]
pub struct PushCache {
    rooms: Mutex<HashMap<u64, Arc<RoomContext>>>,
    /// Rule sets by user, and a generation bumped by every change, so a
    /// load that raced a change is not cached.
    rulesets: Mutex<(u64, HashMap<OwnedUserId, Arc<Ruleset>>)>,
}

impl PushCache {
    pub(crate) fn forget_rules(&self, user_id: &UserId) {
        let mut rulesets = utils::locked(&self.rulesets);
        rulesets.0 += 1;
        rulesets.1.remove(user_id);
    }
}

/// The thread an event belongs to, from its `m.relates_to`.
pub fn thread_of(pdu: &Pdu) -> Option<String> {
    let relation = pdu.content.get("m.relates_to")?;
    (relation.get("rel_type")?.as_str()? == "m.thread")
        .then(|| relation.get("event_id")?.as_str().map(str::to_owned))
        .flatten()
}

impl Services {
    /// Whom `pdu` notifies among the room's local joined members, given the
    /// state before it (`snapshot` names that state, for the cache).
    pub(crate) async fn notifications_for(
        &self,
        room_id: &str,
        room: &RoomRecord,
        snapshot: Option<u64>,
        state: &StateMap,
        pdu: &Pdu,
    ) -> Result<Vec<Notified>> {
        let context = self.push_context(room_id, room, snapshot, state)?;
        let invitee = self.local_invitee(pdu, &context);
        if invitee.is_none() && context.members.iter().all(|(user, _)| user == &pdu.sender) {
            return Ok(Vec::new());
        }
        let room_id = OwnedRoomId::try_from(room_id).map_err(Error::internal)?;
        // The event is flattened once and one context is reused: per member
        // only the rules themselves run.
        let raw = Raw::new(&pdu.to_client_event()).map_err(Error::internal)?;
        let event = FlattenedJson::from_raw(&raw);
        let mut ctx = PushConditionRoomCtx::new(
            room_id,
            context.member_count,
            OwnedUserId::try_from(pdu.sender.as_str()).map_err(Error::internal)?,
            String::new(),
        );
        if let Some(levels) = &context.power_levels {
            ctx = ctx.with_power_levels(levels.clone());
        }
        let thread = thread_of(pdu);
        let mut notified = Vec::new();
        let members = context.members.iter().map(|(u, n)| (u, n.as_str(), true));
        let invitee = invitee.as_ref().map(|user| (user, "", false));
        for (user, display_name, counted) in members.chain(invitee) {
            if user == &pdu.sender {
                continue;
            }
            let rules = self.push_rules_cached(user)?;
            ctx.user_id.clone_from(user);
            display_name.clone_into(&mut ctx.user_display_name);
            let mut actions: &[Action] = &[];
            for rule in &*rules {
                if rule.applies(&event, &ctx).await {
                    actions = rule.actions();
                    break;
                }
            }
            if actions.iter().any(Action::should_notify) {
                notified.push(Notified {
                    user: user.clone(),
                    notification: Notification {
                        highlight: actions.iter().any(Action::is_highlight),
                        thread: thread.clone(),
                    },
                    actions: actions.to_vec(),
                    counted,
                    pushers: self.pushers.ids_of(user),
                });
            }
        }
        Ok(notified)
    }

    /// The local user an invite is for, when they are not a member yet:
    /// their `.m.rule.invite_for_me` decides whether their phone rings.
    fn local_invitee(&self, pdu: &Pdu, context: &RoomContext) -> Option<OwnedUserId> {
        if pdu.kind != "m.room.member"
            || pdu.content.get("membership").and_then(|m| m.as_str()) != Some("invite")
        {
            return None;
        }
        let user = OwnedUserId::try_from(pdu.state_key.as_deref()?).ok()?;
        (self.users.is_local(&user) && !context.members.iter().any(|(m, _)| m == &user))
            .then_some(user)
    }

    fn push_rules_cached(&self, user_id: &UserId) -> Result<Arc<Ruleset>> {
        let generation = {
            let rulesets = utils::locked(&self.push_cache.rulesets);
            if let Some(rules) = rulesets.1.get(user_id) {
                return Ok(rules.clone());
            }
            rulesets.0
        };
        let rules = Arc::new(self.account_data.push_rules(user_id)?);
        let mut rulesets = utils::locked(&self.push_cache.rulesets);
        if rulesets.0 == generation {
            rulesets.1.insert(user_id.to_owned(), rules.clone());
        }
        Ok(rules)
    }

    fn push_context(
        &self,
        room_id: &str,
        room: &RoomRecord,
        snapshot: Option<u64>,
        state: &StateMap,
    ) -> Result<Arc<RoomContext>> {
        if let Some(context) = utils::locked(&self.push_cache.rooms)
            .get(&room.short)
            .filter(|c| c.snapshot == snapshot && snapshot.is_some())
        {
            return Ok(context.clone());
        }
        let (members, joined) = match snapshot {
            Some(id) => {
                let summary = self.member_summary(room.short, id)?;
                let members = summary
                    .local_joined
                    .iter()
                    .map(|(user, name)| (user.clone(), name.clone()))
                    .collect();
                (members, summary.joined)
            }
            None => (Vec::new(), 0),
        };
        let context = Arc::new(RoomContext {
            snapshot,
            members,
            member_count: UInt::try_from(joined).unwrap_or(UInt::MAX),
            power_levels: self.push_power_levels(room_id, room, state)?,
        });
        utils::locked(&self.push_cache.rooms).insert(room.short, context.clone());
        Ok(context)
    }

    /// The power levels as ruma's push conditions read them (`@room`
    /// notifications need the sender's level).
    fn push_power_levels(
        &self,
        room_id: &str,
        room: &RoomRecord,
        state: &StateMap,
    ) -> Result<Option<PushConditionPowerLevelsCtx>> {
        let (_, version) = version_rules(&room.version)?;
        let rules = version.authorization;
        let source = match self.state_event(state, "m.room.power_levels", "")? {
            Some(levels) => match serde_json::from_value(levels.content.clone()) {
                Ok(content) => RoomPowerLevelsSource::Original(content),
                Err(e) => {
                    tracing::debug!(room_id, "power levels unreadable for push rules: {e}");
                    return Ok(None);
                }
            },
            None => RoomPowerLevelsSource::None,
        };
        let mut creators = Vec::new();
        if rules.explicitly_privilege_room_creators
            && let Some(create) = self.state_event(state, "m.room.create", "")?
        {
            creators.extend(OwnedUserId::try_from(create.sender.as_str()).ok());
            if let Some(more) = create
                .content
                .get("additional_creators")
                .and_then(|c| c.as_array())
            {
                creators.extend(
                    more.iter()
                        .filter_map(|u| u.as_str())
                        .filter_map(|u| OwnedUserId::try_from(u).ok()),
                );
            }
        }
        Ok(Some(RoomPowerLevels::new(source, &rules, creators).into()))
    }
}
