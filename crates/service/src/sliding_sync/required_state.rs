//! A room's `required_state` as a sliding sync list or subscription asks
//! for it: `[type, state_key]` pairs where `*` is a wildcard, `$ME` the
//! syncing user and `["m.room.member", "$LAZY"]` the members of the
//! timeline's senders. Several configs of one room combine into their
//! union; comparing the stored one with the new one says what a client
//! asks for that it was not sent yet.

use std::collections::{BTreeMap, BTreeSet};

/// What one room's state section holds, normalised.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequiredState {
    /// `["*", "*"]`: the whole state.
    pub all: bool,
    /// `["m.room.member", "$LAZY"]`: the senders' member events.
    pub lazy_members: bool,
    /// Event type -> the state keys wanted (`None`: every key).
    pub types: BTreeMap<String, Option<BTreeSet<String>>>,
    /// `["*", key]`: that state key of any type.
    pub any_type: BTreeSet<String>,
}

pub const WILDCARD: &str = "*";
const LAZY: &str = "$LAZY";
const ME: &str = "$ME";
const MEMBER: &str = "m.room.member";

impl RequiredState {
    /// The normalised form of a request's pairs for `user`.
    pub fn from_pairs(pairs: &[(String, String)], user: &str) -> Self {
        let mut state = Self::default();
        for (kind, key) in pairs {
            let key = if key == ME { user } else { key.as_str() };
            match (kind.as_str(), key) {
                (WILDCARD, WILDCARD) => state.all = true,
                (MEMBER, LAZY) => state.lazy_members = true,
                // `$LAZY` means nothing for other types.
                (_, LAZY) => {}
                (WILDCARD, key) => {
                    state.any_type.insert(key.to_owned());
                }
                (kind, WILDCARD) => {
                    state.types.insert(kind.to_owned(), None);
                }
                (kind, key) => {
                    // A type already wanted with every key stays so.
                    if let Some(keys) = state
                        .types
                        .entry(kind.to_owned())
                        .or_insert_with(|| Some(BTreeSet::new()))
                    {
                        keys.insert(key.to_owned());
                    }
                }
            }
        }
        state
    }

    /// Whether the state event `(kind, state_key)` is asked for (lazy
    /// members aside: those depend on the timeline).
    pub fn wants(&self, kind: &str, state_key: &str) -> bool {
        self.all
            || self.any_type.contains(state_key)
            || match self.types.get(kind) {
                Some(None) => true,
                Some(Some(keys)) => keys.contains(state_key),
                None => false,
            }
    }

    /// Whether every member event is asked for anyway (lazy loading then
    /// adds nothing).
    pub fn all_members(&self) -> bool {
        self.all || matches!(self.types.get(MEMBER), Some(None))
    }

    /// Adds `other` to this config: a room in several lists gets the
    /// state any of them asks for.
    pub fn merge(&mut self, other: &Self) {
        self.all |= other.all;
        self.lazy_members |= other.lazy_members;
        self.any_type.extend(other.any_type.iter().cloned());
        for (kind, keys) in &other.types {
            match (self.types.get_mut(kind), keys) {
                (None, keys) => {
                    self.types.insert(kind.clone(), keys.clone());
                }
                (Some(mine), None) => *mine = None,
                (Some(Some(mine)), Some(keys)) => mine.extend(keys.iter().cloned()),
                (Some(None), Some(_)) => {}
            }
        }
    }

    /// Whether `self` asks for state that `before` did not: the client
    /// widened its config and is owed what it was not sent.
    pub fn adds_to(&self, before: &Self) -> bool {
        if before.all {
            return false;
        }
        if self.all || !self.any_type.is_subset(&before.any_type) {
            return true;
        }
        if self.lazy_members && !before.lazy_members && !before.all_members() {
            return true;
        }
        self.types.iter().any(|(kind, keys)| {
            match (before.types.get(kind), keys) {
                (None, _) => keys.as_ref().is_none_or(|keys| {
                    // Keys the old config had through `["*", key]`.
                    !keys.is_subset(&before.any_type)
                }),
                (Some(None), _) => false,
                (Some(Some(_)), None) => true,
                (Some(Some(old)), Some(new)) => new
                    .iter()
                    .any(|key| !old.contains(key) && !before.any_type.contains(key)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn pairs_become_a_config_with_wildcards_me_and_lazy() {
        let state = RequiredState::from_pairs(
            &pairs(&[
                ("m.room.name", ""),
                ("m.room.member", "$ME"),
                ("m.room.member", "$LAZY"),
                ("m.space.child", "*"),
                ("m.room.topic", "$LAZY"),
            ]),
            "@me:x",
        );
        assert!(state.lazy_members && !state.all);
        assert!(state.wants("m.room.name", ""));
        assert!(!state.wants("m.room.name", "other"));
        assert!(state.wants("m.room.member", "@me:x"));
        assert!(
            !state.wants("m.room.member", "@you:x"),
            "lazy members come from the timeline"
        );
        assert!(state.wants("m.space.child", "!any:x"));
        assert!(
            !state.wants("m.room.topic", ""),
            "$LAZY means nothing for topics"
        );
        assert!(!state.all_members());

        let all = RequiredState::from_pairs(&pairs(&[("*", "*")]), "@me:x");
        assert!(all.wants("anything", "at all") && all.all_members());
        let key = RequiredState::from_pairs(&pairs(&[("*", "")]), "@me:x");
        assert!(key.wants("m.room.create", "") && !key.wants("m.room.member", "@me:x"));
    }

    #[test]
    fn merged_configs_are_the_union_and_widening_is_seen() {
        let me = "@me:x";
        let small = RequiredState::from_pairs(&pairs(&[("m.room.name", "")]), me);
        let mut big = small.clone();
        big.merge(&RequiredState::from_pairs(
            &pairs(&[("m.room.member", "*"), ("m.room.name", "x")]),
            me,
        ));
        assert!(big.wants("m.room.name", "") && big.wants("m.room.name", "x"));
        assert!(big.all_members());
        assert!(big.adds_to(&small));
        assert!(!small.adds_to(&big));
        assert!(!big.adds_to(&big));

        // Lazy members add nothing to a config that has every member.
        let lazy = RequiredState::from_pairs(&pairs(&[("m.room.member", "$LAZY")]), me);
        assert!(!lazy.adds_to(&big));
        assert!(lazy.adds_to(&small));
        // A key the old config had for any type is not new.
        let any = RequiredState::from_pairs(&pairs(&[("*", "")]), me);
        assert!(!small.adds_to(&any));
        let everything = RequiredState::from_pairs(&pairs(&[("*", "*")]), me);
        assert!(everything.adds_to(&big) && !big.adds_to(&everything));
        let mut wider = small.clone();
        wider.merge(&RequiredState::from_pairs(
            &pairs(&[("m.room.name", "*")]),
            me,
        ));
        assert!(wider.adds_to(&small));
    }
}
