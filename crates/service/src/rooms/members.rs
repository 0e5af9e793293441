//! Who is in a room at a state, in numbers: joined and invited counts, the
//! servers with members, and this server's joined members with their
//! display names. Sends, push rules, sync summaries and federation fan-out
//! read it on every event, so it must not cost a walk over a 30,000-member
//! state: each room keeps the summary of the last state asked for, and the
//! summary of another state is that one updated by the member events that
//! differ (found by comparing the two maps of integers; only those events
//! are read).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use conduit_state_res::StateMap;
use ruma::{OwnedServerName, OwnedUserId, ServerName};

use super::{membership::membership_of, pdu::Pdu};
use crate::{Result, Services, utils};

/// Rooms whose last summary is kept.
const ROOMS_KEPT: usize = 4096;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberSummary {
    pub joined: u64,
    pub invited: u64,
    /// Joined and invited members per server (this one's included).
    servers: HashMap<OwnedServerName, (u32, u32)>,
    /// This server's joined members and their display names.
    pub local_joined: BTreeMap<OwnedUserId, String>,
}

impl MemberSummary {
    /// The servers with a joined (and with `invited_too`, invited) member.
    pub fn servers(&self, invited_too: bool) -> impl Iterator<Item = &ServerName> {
        self.servers
            .iter()
            .filter(move |(_, (joined, invited))| *joined > 0 || invited_too && *invited > 0)
            .map(|(server, _)| server.as_ref())
    }

    /// Counts a member event in (`sign` 1) or out (`sign` -1).
    fn count(
        &mut self,
        user: &str,
        membership: &str,
        displayname: Option<&str>,
        sign: i64,
        local: &ServerName,
    ) {
        let Ok(user) = OwnedUserId::try_from(user) else {
            return;
        };
        let step = |n: &mut u64| *n = n.saturating_add_signed(sign);
        let entry = self
            .servers
            .entry(user.server_name().to_owned())
            .or_default();
        let bump = |n: &mut u32| *n = n.saturating_add_signed(sign as i32);
        match membership {
            "join" => {
                step(&mut self.joined);
                bump(&mut entry.0);
            }
            "invite" => {
                step(&mut self.invited);
                bump(&mut entry.1);
            }
            _ => {}
        }
        if *entry == (0, 0) {
            self.servers.remove(user.server_name());
        }
        if membership == "join" && user.server_name() == local {
            if sign > 0 {
                let name = displayname.unwrap_or(user.localpart()).to_owned();
                self.local_joined.insert(user, name);
            } else {
                self.local_joined.remove(&user);
            }
        }
    }
}

/// A room's last summary: the snapshot it is of, that state, the summary.
type Kept = (u64, Arc<StateMap>, Arc<MemberSummary>);

/// The last summary of each room.
#[derive(Default)]
pub struct MemberSummaries {
    rooms: Mutex<HashMap<u64, Kept>>,
}

impl Services {
    /// The member summary of `room` at state snapshot `snapshot`.
    pub fn member_summary(&self, room: u64, snapshot: u64) -> Result<Arc<MemberSummary>> {
        self.member_summary_with(room, snapshot, None)
    }

    /// [`member_summary`](Self::member_summary) of a state that holds
    /// `pending`, an event not stored yet (the one being appended).
    pub(crate) fn member_summary_with(
        &self,
        room: u64,
        snapshot: u64,
        pending: Option<&Pdu>,
    ) -> Result<Arc<MemberSummary>> {
        let last = utils::locked(&self.member_summaries.rooms)
            .get(&room)
            .cloned();
        if let Some((at, _, summary)) = &last
            && *at == snapshot
        {
            return Ok(summary.clone());
        }
        let state = self.state_snapshots.load(snapshot)?;
        let summary = match last {
            Some((_, before, summary)) => {
                self.update_summary(&summary, &before, &state, pending)?
            }
            None => {
                self.update_summary(&MemberSummary::default(), &StateMap::new(), &state, pending)?
            }
        };
        let summary = Arc::new(summary);
        if pending.is_some() {
            // Not kept: the event may never be stored (the append can
            // fail), and a later diff would read it as absent.
            return Ok(summary);
        }
        let mut rooms = utils::locked(&self.member_summaries.rooms);
        if rooms.len() >= ROOMS_KEPT && !rooms.contains_key(&room) {
            rooms.clear();
        }
        rooms.insert(room, (snapshot, state, summary.clone()));
        Ok(summary)
    }

    /// `summary` of state `before`, made the summary of `after`.
    pub(crate) fn update_summary(
        &self,
        summary: &MemberSummary,
        before: &StateMap,
        after: &StateMap,
        pending: Option<&Pdu>,
    ) -> Result<MemberSummary> {
        let mut summary = summary.clone();
        let local = self.config.server_name.as_ref();
        let changed: BTreeSet<u64> = before
            .iter()
            .filter(|(key, event)| after.get(key) != Some(event))
            .chain(
                after
                    .iter()
                    .filter(|(key, event)| before.get(key) != Some(event)),
            )
            .map(|(key, _)| *key)
            .collect();
        for key in changed {
            let (kind, user) = self.short_ids.state_key(key)?;
            if kind != "m.room.member" {
                continue;
            }
            for (state, sign) in [(before, -1), (after, 1)] {
                let Some(&event) = state.get(&key) else {
                    continue;
                };
                let member = match pending {
                    Some(pdu) if pdu.short == event => Some(pdu.clone()),
                    _ => self.rooms.pdu(event, &self.short_ids)?,
                };
                if let Some(member) = member {
                    let name = member.content.get("displayname").and_then(|n| n.as_str());
                    summary.count(&user, membership_of(&member), name, sign, local);
                }
            }
        }
        Ok(summary)
    }
}
